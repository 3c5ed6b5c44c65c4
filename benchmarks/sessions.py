"""How many concurrent realtime sessions one core carries while every tick stays within 10 ms of its deadline.

A trial runs N realtime sessions in one process and one ``trio.run``, pinned to one core
(``os.sched_setaffinity(0, {core})``, core 0 unless ``--core``). Each session is the seven demo actors
(``microturn.demo.build``: clock, perception, dialog state, an echo "model", output mixer, background, tool
runner) at the real 200 ms tick, with user input flowing: every session gets a ``UserText`` about once a second
(at a random phase), so perception, the model, the floor tracker and the mixer all do work. Sessions start at
random times spread over one 200 ms period (seeded), as real sessions do, so their tick deadlines are spread
over the period instead of all landing on the same instant.

The figure is tick lateness — how long after its absolute deadline each session's ``Tick`` went out
(``ClockActor.lateness``) — pooled over every tick of every session. ``max_sessions`` is the largest N whose
p99 stays <= 10 ms over the *steady-state window*: it opens once every session has started, the start-up's
garbage has been collected (``gc.collect()``) and ``SETTLE`` (1 s) has passed for the backlog the start-up
burst left to drain; it lasts ``--seconds``. Every session keeps ticking until the window's last tick has had
``GRACE`` to go out (a tick still missing then counts as that late), and only then are the sessions torn down,
so neither the start-up burst (N sessions, 7N actors, all inside 200 ms — far denser than real arrivals) nor
the teardown burst decides the figure. ``p99 all`` (every tick from each session's first) shows the start-up
burst for reference.

The garbage collector runs as it would in a server (``--gc default``). Its full collections scan every live
object, so their pauses grow with the number of sessions; ``--gc freeze`` (``gc.freeze()`` after start-up) and
``--gc off`` show how much of the limit is the collector rather than the runtime's CPU cost.

N is searched by doubling from ``--start`` until a trial fails, then by bisection down to a step of ~5 %, with
each trial running ``--seconds`` of steady state (3 s: 15 ticks per session, thousands of samples at the N that
matter); the search stops early when the time budget (``--budget``, 110 s, so ~2 minutes in all) is spent.
Other processes on the pinned core count against the result (the OS preempts the event loop for several
ms): each row shows the process's CPU share over the trial and its involuntary context switches
("preempt"); run it on a quiet machine.

    python benchmarks/sessions.py [--quick] [--seconds 3] [--core 0] [--budget 110] [--gc default|freeze|off]

Prints one row per trial, then, as its last line, one JSON object:
{"max_sessions": N, "target": 200, "p99_ms_at_max": ..., "limit_ms": 10.0, "pinned_core": 0, ...}
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _common import (
    USER_LINES,
    CpuMeter,
    cpu_name,
    emit,
    load_average,
    percentile,
    pin_to_one_core,
    quiet_logging,
)

from microturn.actors.clock import ClockActor
from microturn.demo import build
from microturn.messages import UserText
from microturn.runtime import open_session

PERIOD = 0.2
LIMIT_MS = 10.0
SETTLE = 1.0
"""Seconds between the last session starting and the window opening, for the start-up backlog to drain."""
GRACE = 0.25
"""Seconds to wait after the window for its last ticks to go out, before reading lateness."""
INPUTS = USER_LINES


async def trial(
    n: int, seconds: float, seed: int, gc_mode: str = "default", settle: float = SETTLE
) -> dict[str, float]:
    """Run ``n`` sessions; lateness percentiles (ms) over the steady-state window and over all ticks."""
    rng = random.Random(seed)
    clocks: list[tuple[float, ClockActor]] = []  # (session origin, its clock actor)
    buses = []
    all_started = trio.Event()

    async def one(index: int, start_at: float) -> None:
        await trio.sleep_until(start_at)
        phase = random.Random(seed * 1_000_003 + index).uniform(0.1, 1.0)
        actors = build()
        clock_actor = actors[0]
        assert isinstance(clock_actor, ClockActor)
        async with open_session(actors, mode="realtime", tick_period=PERIOD, session_id=f"s{index}") as session:
            clocks.append((session.clock.origin, clock_actor))
            buses.append(session.bus)
            if len(clocks) == n:
                all_started.set()
            t = phase
            while True:  # a user who says something about once a second, until the trial is cancelled
                await session.clock.sleep_until(t)
                await session.publish(UserText(text=INPUTS[(index + int(t)) % len(INPUTS)]), source="user")
                t += 1.0

    gc.collect()
    t0 = trio.current_time() + 0.05
    wall = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i, t0 + rng.uniform(0.0, PERIOD))
        await all_started.wait()
        # The start-up burst is over; settle its garbage-collection debt too (a full collection over every
        # object the N sessions just made, tens of ms at a few hundred sessions) before the window opens, so
        # the window sees only what steady running costs, its own collections included.
        gc.collect()
        if gc_mode == "freeze":
            gc.freeze()
        elif gc_mode == "off":
            gc.disable()
        # Let the backlog the burst left behind (late ticks, queued messages) drain before measuring.
        await trio.sleep(settle)
        window = (trio.current_time(), trio.current_time() + seconds)
        seq0 = sum(bus.seq for bus in buses)
        await trio.sleep_until(window[1])
        messages = sum(bus.seq for bus in buses) - seq0
        await trio.sleep_until(window[1] + GRACE)
        # Read lateness before anything shuts down: every session is still ticking.
        now = trio.current_time()
        steady: list[float] = []
        every: list[float] = []
        for origin, clock_actor in clocks:
            lateness = clock_actor.lateness
            k = 0
            while True:
                deadline = origin + PERIOD * (k + 1)
                if deadline > window[1]:
                    break
                # A tick still missing GRACE seconds after its deadline counts as at least that late.
                late_ms = (lateness[k] if k < len(lateness) else now - deadline) * 1e3
                every.append(late_ms)
                if deadline >= window[0]:
                    steady.append(late_ms)
                k += 1
        nursery.cancel_scope.cancel()
    wall = time.perf_counter() - wall
    gc.enable()
    gc.unfreeze()
    return {
        "n": n,
        "p50": percentile(steady, 50),
        "p99": percentile(steady, 99),
        "max": max(steady) if steady else float("nan"),
        "p99_all": percentile(every, 99),
        "samples": len(steady),
        "messages": messages,
        "msgs_per_s": messages / seconds,
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (two short trials)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="steady-state seconds per trial (default 3)",
    )
    parser.add_argument(
        "--start",
        type=int,
        default=None,
        help="first N of the doubling search (default 50)",
    )
    parser.add_argument("--core", type=int, default=0, help="the core to pin to (default 0)")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="stop searching after this many seconds",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--gc",
        choices=("default", "freeze", "off"),
        default="default",
        help="garbage collector during the window: as shipped (default), gc.freeze() after start-up, or disabled",
    )
    args = parser.parse_args()
    seconds = args.seconds or (0.6 if args.quick else 3.0)
    start = args.start or (10 if args.quick else 50)
    budget = args.budget or (3.0 if args.quick else 110.0)
    quiet_logging()
    pinned = pin_to_one_core(args.core)

    print(
        f"concurrent realtime sessions (7 demo actors each, 200 ms ticks, input ~1/s), one trio.run, "
        f"pinned to core {pinned}, {seconds:g} s steady state per trial, gc {args.gc}, {cpu_name()}"
    )
    print(
        f"{'N':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'p99 all':>9}{'ticks':>8}{'msgs/s':>9}{'wall s':>8}"
        f"{'cpu':>6}{'preempt':>9}  ok"
    )
    load = load_average()
    began = time.perf_counter()
    results: dict[int, dict[str, float]] = {}

    def run(n: int) -> bool:
        with CpuMeter() as meter:
            r = trio.run(trial, n, seconds, args.seed + n, args.gc, 0.4 if args.quick else SETTLE)
        r["share"], r["preempted"] = meter.share, meter.preemptions
        results[n] = r
        ok = r["p99"] <= LIMIT_MS
        print(
            f"{n:>6}{r['p50']:>9.3f}{r['p99']:>9.3f}{r['max']:>9.2f}{r['p99_all']:>9.2f}{r['samples']:>8}"
            f"{r['msgs_per_s']:>9.0f}{r['wall']:>8.2f}{r['share']:>6.2f}{r['preempted']:>9}"
            f"  {'yes' if ok else 'NO'}",
            flush=True,
        )
        return ok

    def spent() -> bool:
        return time.perf_counter() - began > budget

    lo, hi = 0, None  # largest N that passed, smallest N that failed
    n = start
    while hi is None:
        if run(n):
            lo = n
            n *= 2
        else:
            hi = n
        if spent() or n > 20_000:
            break
    while hi is not None and hi - lo > max(2, lo // 20) and not spent():
        mid = (lo + hi) // 2
        if run(mid):
            lo = mid
        else:
            hi = mid

    at_max = results.get(lo, {})
    emit(
        {
            "max_sessions": lo,
            "target": 200,
            "limit_ms": LIMIT_MS,
            "first_failing": hi,
            "p99_ms_at_max": round(at_max.get("p99", float("nan")), 3),
            "p50_ms_at_max": round(at_max.get("p50", float("nan")), 3),
            "msgs_per_s_at_max": round(at_max.get("msgs_per_s", float("nan")), 1),
            "p99_ms_all_ticks_at_max": round(at_max.get("p99_all", float("nan")), 3),
            "trials": len(results),
            "seconds_per_trial": seconds,
            "search_seconds": round(time.perf_counter() - began, 1),
            "budget_exhausted": spent(),
            "cpu_share_at_max": round(at_max.get("share", float("nan")), 3),
            "preemptions_at_max": at_max.get("preempted"),
            "gc": args.gc,
            "pinned_core": pinned,
            "load_average": load,
            "cpu": cpu_name(),
        }
    )


if __name__ == "__main__":
    main()
