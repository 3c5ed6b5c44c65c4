"""One message through the microturn bus versus one hop through a trio memory channel, side by side.

Both sides run in the same process, in the same ``trio.run`` (trio's real clock), interleaved repeat by repeat,
and move the same realistic message object (``UserText(text="hello")``). The reply in the ping-pong variant
is a small ``OutputChunk``. Two shapes are measured:

- **stream** (one way, the headline ``ratio_vs_trio_channel``): a producer task sends N messages; a consumer
  task receives each one and hands it to an ``async def handle(message)`` that counts it.
  *trio*: ``trio.open_memory_channel(256)``; the producer ``await send.send(msg)``, the consumer
  ``async for msg in receive: await handle(msg)``.
  *microturn*: a realtime-mode session (lockstep would add its turnstile, which is not what is being
  measured) with one actor subscribed to ``UserText`` (``block``, ``maxlen=256`` — the same bound as the
  channel), whose ``handle()`` counts; the producer ``await session.publish(msg)``. This includes
  everything the bus does per message: route lookup, backpressure check, the global sequence number, the
  stamped copy of the message (``msgspec.structs.replace``), the taps, the mailbox put and the reader's
  wake-up, and the actor's serve loop (mailbox get, ``Interrupt`` check, handle).
  The two APIs schedule differently, and the numbers include that on purpose: trio's ``send`` and
  ``receive`` are checkpoints (each yields to the scheduler even when it need not wait), while
  ``Bus.publish`` and ``Mailbox.get`` only yield when they have to wait (a full ``block`` queue, an empty
  mailbox). So the microturn stream moves in bursts of up to ``maxlen`` messages per task switch.
- **ping-pong** (round trip): task A sends one message, task B receives it and sends a reply, A receives the
  reply, N times. Every hop must wake the other task, so this is the per-hop cost *including* one task
  switch on both sides. *trio*: two memory channels. *microturn*: two actors in one session — a pinger
  subscribed to ``OutputChunk`` whose ``handle()`` publishes the next ``UserText``, and a ponger subscribed to
  ``UserText`` whose ``handle()`` publishes an ``OutputChunk``.

Each repeat runs both sides (which one goes first alternates), the garbage collector is run before each timed
section, and the figure is the median over repeats. Ratios are microturn time / trio time, so < 1 means the
bus is faster than a bare channel.

    python benchmarks/bus_hop.py [--quick] [--messages N] [--repeats R]

Prints a table, then, as its last line, one JSON object:
{"ratio_vs_trio_channel": stream ratio, "ratio_pingpong": ..., "ns_per_hop_*": ..., "target": 2.0, ...}
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_name, emit, quiet_logging  # noqa: E402

import trio  # noqa: E402
import trio.testing  # noqa: E402

from microturn.messages import OutputChunk, UserText  # noqa: E402
from microturn.runtime import Actor, Overflow, Subscribe, open_session  # noqa: E402

CAPACITY = 256
MESSAGE = UserText(text="hello")
REPLY = OutputChunk(tick=0, generation=0, text="hi")


# --- trio -----------------------------------------------------------------------------------------------------


async def trio_stream(n: int) -> float:
    """Seconds for ``n`` messages through one memory channel, producer to a consumer's handle()."""
    send, receive = trio.open_memory_channel[UserText](CAPACITY)
    done = trio.Event()
    count = 0

    async def handle(message: UserText) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async def consumer() -> None:
        async with receive:
            async for message in receive:
                await handle(message)

    async def producer() -> None:
        async with send:
            for _ in range(n):
                await send.send(MESSAGE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        start = time.perf_counter()
        nursery.start_soon(producer)
        await done.wait()
        elapsed = time.perf_counter() - start
    return elapsed


async def trio_stream_batched(n: int) -> float:
    """Like :func:`trio_stream`, but scheduled the way the bus is: ``send_nowait`` / ``receive_nowait`` while
    they succeed, the awaiting call only when the channel is full (producer) or empty (consumer)."""
    send, receive = trio.open_memory_channel[UserText](CAPACITY)
    done = trio.Event()
    count = 0

    async def handle(message: UserText) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async def consumer() -> None:
        async with receive:
            while True:
                try:
                    message = receive.receive_nowait()
                except trio.WouldBlock:
                    try:
                        message = await receive.receive()
                    except trio.EndOfChannel:
                        return
                except trio.EndOfChannel:
                    return
                await handle(message)

    async def producer() -> None:
        async with send:
            for _ in range(n):
                try:
                    send.send_nowait(MESSAGE)
                except trio.WouldBlock:
                    await send.send(MESSAGE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        start = time.perf_counter()
        nursery.start_soon(producer)
        await done.wait()
        elapsed = time.perf_counter() - start
    return elapsed


async def trio_pingpong(n: int) -> float:
    """Seconds for ``n`` round trips (2n hops) between two tasks over two memory channels."""
    a_send, a_receive = trio.open_memory_channel[UserText](CAPACITY)
    b_send, b_receive = trio.open_memory_channel[OutputChunk](CAPACITY)

    async def ponger() -> None:
        async with a_receive, b_send:
            async for _ in a_receive:
                await b_send.send(REPLY)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ponger)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        start = time.perf_counter()
        async with a_send, b_receive:
            for _ in range(n):
                await a_send.send(MESSAGE)
                await b_receive.receive()
            elapsed = time.perf_counter() - start
    return elapsed


# --- microturn ------------------------------------------------------------------------------------------------


class Counter(Actor):
    """Counts the ``UserText`` it handles; sets ``done`` at ``n``."""

    subscriptions = (Subscribe(UserText, Overflow.BLOCK, maxlen=CAPACITY),)

    def __init__(self, n: int) -> None:
        super().__init__("counter")
        self.n = n
        self.count = 0
        self.done = trio.Event()

    async def handle(self, message: object) -> None:
        self.count += 1
        if self.count == self.n:
            self.done.set()


class Ponger(Actor):
    """Answers every ``UserText`` with an ``OutputChunk``."""

    subscriptions = (Subscribe(UserText, Overflow.BLOCK, maxlen=CAPACITY),)

    async def handle(self, message: object) -> None:
        if type(message) is UserText:
            await self.publish(REPLY)


class Pinger(Actor):
    """Sends the next ``UserText`` for every ``OutputChunk`` until ``n`` round trips are done."""

    subscriptions = (Subscribe(OutputChunk, Overflow.BLOCK, maxlen=CAPACITY),)

    def __init__(self, n: int) -> None:
        super().__init__("pinger")
        self.n = n
        self.count = 0
        self.done = trio.Event()

    async def handle(self, message: object) -> None:
        if type(message) is OutputChunk:
            self.count += 1
            if self.count == self.n:
                self.done.set()
            else:
                await self.publish(MESSAGE)


async def microturn_stream(n: int) -> float:
    """Seconds for ``n`` messages published into a realtime session and handled by one subscribed actor."""
    counter = Counter(n)
    async with open_session([counter], mode="realtime", session_id="bus-hop") as session:
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        start = time.perf_counter()
        for _ in range(n):
            await session.publish(MESSAGE)
        await counter.done.wait()
        elapsed = time.perf_counter() - start
    return elapsed


async def microturn_pingpong(n: int) -> float:
    """Seconds for ``n`` round trips (2n bus hops) between two actors of one realtime session."""
    pinger = Pinger(n)
    async with open_session([pinger, Ponger("ponger")], mode="realtime", session_id="bus-pingpong") as session:
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        start = time.perf_counter()
        await session.publish(MESSAGE)
        await pinger.done.wait()
        elapsed = time.perf_counter() - start
    return elapsed


# --- driver ---------------------------------------------------------------------------------------------------


async def measure(n: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per hop, per repeat, for each (shape, side)."""
    pairs = {
        "stream": (trio_stream, microturn_stream, n),
        "batched": (trio_stream_batched, microturn_stream, n),
        "pingpong": (trio_pingpong, microturn_pingpong, n // 2),
    }
    out: dict[str, list[float]] = {f"{shape}/{side}": [] for shape in pairs for side in ("trio", "microturn")}
    for fn_trio, fn_mt, count in pairs.values():  # warm-up: imports, route caches, code paths
        await fn_trio(min(count, 1000))
        await fn_mt(min(count, 1000))
    for r in range(repeats):
        for shape, (fn_trio, fn_mt, count) in pairs.items():
            hops = 2 * count if shape == "pingpong" else count
            order = [("trio", fn_trio), ("microturn", fn_mt)]
            if r % 2:
                order.reverse()
            for side, fn in order:
                out[f"{shape}/{side}"].append(await fn(count) / hops)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (few messages, 3 repeats)")
    parser.add_argument("--messages", type=int, default=None, help="messages per timed section (default 50000)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats; the median is reported (default 9)")
    args = parser.parse_args()
    n = args.messages or (2000 if args.quick else 50_000)
    repeats = args.repeats or (3 if args.quick else 9)
    quiet_logging()

    runs = trio.run(measure, n, repeats)
    med = {key: statistics.median(v) for key, v in runs.items()}
    ratio_stream = med["stream/microturn"] / med["stream/trio"]
    ratio_pp = med["pingpong/microturn"] / med["pingpong/trio"]
    ratio_batched = med["batched/microturn"] / med["batched/trio"]

    print(f"bus hop vs trio memory channel: {n} messages per section, median of {repeats}, {cpu_name()}")
    print(f"{'shape':<22}{'trio ns/hop':>13}{'microturn ns/hop':>18}{'ratio':>8}{'ratio min..max':>18}")
    rows = [("stream", "stream (one way)"), ("batched", "stream, trio *_nowait"), ("pingpong", "ping-pong (per hop)")]
    for key, shape in rows:
        ratio = med[key + "/microturn"] / med[key + "/trio"]
        per_rep = [m / t for m, t in zip(runs[f"{key}/microturn"], runs[f"{key}/trio"], strict=True)]
        print(
            f"{shape:<22}{med[key + '/trio'] * 1e9:>13.0f}{med[key + '/microturn'] * 1e9:>18.0f}{ratio:>8.2f}"
            f"{f'{min(per_rep):.2f}..{max(per_rep):.2f}':>18}"
        )
    emit(
        {
            "ratio_vs_trio_channel": round(ratio_stream, 3),
            "ratio_pingpong": round(ratio_pp, 3),
            "ratio_vs_trio_nowait": round(ratio_batched, 3),
            "ns_per_hop_trio_stream": round(med["stream/trio"] * 1e9, 1),
            "ns_per_hop_microturn_stream": round(med["stream/microturn"] * 1e9, 1),
            "ns_per_hop_trio_nowait": round(med["batched/trio"] * 1e9, 1),
            "ns_per_hop_trio_pingpong": round(med["pingpong/trio"] * 1e9, 1),
            "ns_per_hop_microturn_pingpong": round(med["pingpong/microturn"] * 1e9, 1),
            "headline": "stream",
            "target": 2.0,
            "pipecat_ratio": 1.3,
            "messages": n,
            "repeats": repeats,
            "message": "UserText(text='hello')",
            "cpu": cpu_name(),
        }
    )


if __name__ == "__main__":
    main()
