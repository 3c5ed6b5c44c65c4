"""One message through the microturn bus versus one hop through a trio memory channel, side by side.

Both sides run in the same process, in the same ``trio.run`` (trio's real clock), interleaved repeat by repeat,
and move the same realistic message object (``UserText(text="hello")``; the ping-pong reply is a small
``OutputChunk``). The microturn side is a realtime-mode session (lockstep adds its turnstile, which is not what
is measured here) and everything the bus does per message counts: the cancellation check, route lookup,
backpressure check, the global sequence number, the stamped copy of the message (``msgspec.structs.replace``
with a new ``Stamp``), the taps, the mailbox put and the reader's wake-up, and the actor's serve loop (mailbox
get, ``Interrupt`` check, ``handle()``). The trio side is ``trio.open_memory_channel(256)`` — the same bound as
the actor's ``block`` subscription (``maxlen=256``) — and a consumer that awaits the same kind of
``async def handle(message)`` that counts.

The two APIs differ in *when they yield to the scheduler*, and that decides what a fair comparison is. trio's
``send`` and ``receive`` are always checkpoints: each one yields even when it need not wait, so a stream costs
two scheduler passes per message. ``Bus.publish`` and the mailbox only yield when they must wait (a full
``block`` queue, an empty mailbox) — as ``asyncio.Queue`` does, which is what pipecat's ~1.3x is measured
against. Three shapes:

- **ping-pong** — the headline ``ratio_vs_trio_channel`` (see below): one message handed to a *waiting*
  receiver, which is what a hop is in a live session (actors idle between 200 ms ticks) and the one shape where
  both sides pay the same scheduling.
- **stream, same scheduling** (``ratio_data_path``): the strictest figure. A producer task sends N messages, a
  consumer task handles each. *microturn*: the producer ``await session.publish(msg)``; an actor subscribed to
  ``UserText`` counts in ``handle()``. *trio*: the producer ``send_nowait`` and the consumer ``receive_nowait``,
  each falling back to the awaiting ``send``/``receive`` only when the channel is full or empty — the bus's
  own scheduling discipline. Both then move messages in bursts between task switches, so this is the cost of
  the data path itself, which for the bus includes the stamped copy of every message.
- **stream, trio's send/receive** (``ratio_vs_trio_channel_api``): the same, but the trio side written the usual
  way (``await send.send(msg)``, ``async for msg in receive``). It shows what a user switching from a channel
  sees, but trio pays two scheduler passes per message here and the bus does not, so the ratio (well below 1)
  says more about trio's checkpoint rule than about the bus; it is reported, not the headline.
- **ping-pong** (``ratio_vs_trio_channel``, per hop): A sends, B receives and replies, A receives the reply, N times.
  Every hop has to wake the other task, as in a pipeline of mostly idle actors. *trio*: two memory channels.
  *microturn*: two actors of one session — a pinger subscribed to ``OutputChunk`` whose ``handle()`` publishes
  the next ``UserText``, and a ponger subscribed to ``UserText`` whose ``handle()`` publishes an ``OutputChunk``.

Each repeat runs every shape on both sides back to back (which side goes first alternates), the garbage
collector is run before each timed section, and each ratio is the median over repeats of the paired ratio
(microturn time / trio time, so < 1 means the bus is faster), which is robust to the machine's load drifting
between repeats. The per-hop times are medians too.

    python benchmarks/bus_hop.py [--quick] [--messages N] [--repeats R]

Prints a table, then, as its last line, one JSON object:
{"ratio_vs_trio_channel": ..., "ratio_data_path": ..., "ratio_vs_trio_channel_api": ..., "ns_per_hop_*": ...,
 "target": 2.0, ...}
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
import trio.testing
from _common import cpu_name, emit, quiet_logging

from microturn.messages import OutputChunk, UserText
from microturn.runtime import Actor, Overflow, Subscribe, open_session

CAPACITY = 256
MESSAGE = UserText(text="hello")
REPLY = OutputChunk(tick=0, generation=0, text="hi")


# --- trio -----------------------------------------------------------------------------------------------------


async def _time_stream(consumer: Any, producer: Any, done: trio.Event) -> float:
    """Start the consumer, let it park, then time the producer until the consumer has handled everything."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        start = time.perf_counter()
        nursery.start_soon(producer)
        await done.wait()
        return time.perf_counter() - start


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

    return await _time_stream(consumer, producer, done)


async def trio_stream_nowait(n: int) -> float:
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

    return await _time_stream(consumer, producer, done)


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


SHAPES = {
    "stream": "stream, same scheduling",
    "stream_api": "stream, trio send/receive",
    "pingpong": "ping-pong, per hop",
}


async def measure(n: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per hop, per repeat, for each (shape, side)."""
    pairs = {
        "stream": (trio_stream_nowait, microturn_stream, n),
        "stream_api": (trio_stream, microturn_stream, n),
        "pingpong": (trio_pingpong, microturn_pingpong, n // 2),
    }
    out: dict[str, list[float]] = {f"{shape}/{side}": [] for shape in pairs for side in ("trio", "microturn")}
    for (
        fn_trio,
        fn_mt,
        count,
    ) in pairs.values():  # warm-up: imports, route caches, code paths
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
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a fast smoke run (few messages, 3 repeats)",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=None,
        help="messages per timed section (default 30000)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="repeats; medians are reported (default 9)",
    )
    args = parser.parse_args()
    n = args.messages or (2000 if args.quick else 30_000)
    repeats = args.repeats or (3 if args.quick else 9)
    quiet_logging()

    runs = trio.run(measure, n, repeats)
    med = {key: statistics.median(v) for key, v in runs.items()}
    ratios = {}
    print(f"bus hop vs trio memory channel: {n} messages per section, median of {repeats}, {cpu_name()}")
    print(f"{'shape':<28}{'trio ns/hop':>12}{'microturn ns/hop':>18}{'ratio':>8}{'min..max':>13}")
    for key, label in SHAPES.items():
        paired = [m / t for m, t in zip(runs[f"{key}/microturn"], runs[f"{key}/trio"], strict=True)]
        ratios[key] = statistics.median(paired)
        print(
            f"{label:<28}{med[key + '/trio'] * 1e9:>12.0f}{med[key + '/microturn'] * 1e9:>18.0f}"
            f"{ratios[key]:>8.2f}{f'{min(paired):.2f}..{max(paired):.2f}':>13}"
        )
    emit(
        {
            "ratio_vs_trio_channel": round(ratios["pingpong"], 3),
            "ratio_data_path": round(ratios["stream"], 3),
            "ratio_vs_trio_channel_api": round(ratios["stream_api"], 3),
            "ns_per_hop_microturn_stream": round(med["stream/microturn"] * 1e9, 1),
            "ns_per_hop_trio_stream_nowait": round(med["stream/trio"] * 1e9, 1),
            "ns_per_hop_trio_stream_api": round(med["stream_api/trio"] * 1e9, 1),
            "ns_per_hop_microturn_pingpong": round(med["pingpong/microturn"] * 1e9, 1),
            "ns_per_hop_trio_pingpong": round(med["pingpong/trio"] * 1e9, 1),
            "headline": "ping-pong: each hop wakes a waiting receiver, on both sides",
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
