"""Ten virtual minutes of one session in lockstep: how much wall time the runtime's own overhead costs.

One lockstep session of the seven demo actors (``microturn.demo.build``: clock, perception, dialog state, an echo
"model", output mixer, background, tool runner) runs 3000 ticks at 200 ms — ten minutes of session time —
under ``microturn.runtime.run_lockstep`` (trio's ``MockClock`` with autojump), with user input going through the
session: ``session.schedule(UserText(...), at=t)`` every 3 s of session time, so perception, the model, the
floor tracker and the mixer all work. The "model" is trivial, so what is measured is the runtime: the lockstep
scheduler (settling between events), the turnstile (one actor step at a time, in bus order), the bus and the
mailboxes. Wall time covers the whole ``run_lockstep`` call: session start, 3000 ticks, orderly close.

The design target (docs/design.md §3) is that a ten-minute scenario runs in well under a second of overhead.

    python benchmarks/lockstep.py [--quick] [--ticks 3000] [--repeats 3]

Prints a table, then, as its last line, one JSON object:
{"wall_seconds": best of the repeats, "target": 1.0, "ticks_per_s": ..., "messages": ..., ...}
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import USER_LINES, cpu_name, emit, quiet_logging

from microturn.demo import build
from microturn.messages import UserText
from microturn.runtime import open_session, run_lockstep

PERIOD = 0.2
INPUT_EVERY = 3.0
INPUTS = USER_LINES


async def scenario(ticks: int) -> dict:
    """One lockstep session of ``ticks`` ticks with input every ``INPUT_EVERY`` s; returns its stats."""
    async with open_session(build(max_ticks=ticks), mode="lockstep", tick_period=PERIOD) as session:
        t, i = 0.3, 0
        while t < ticks * PERIOD:
            session.schedule(UserText(text=INPUTS[i % len(INPUTS)]), at=t)
            t += INPUT_EVERY
            i += 1
        await session.wait_tick(ticks - 1)
        stats = session.stats()
        stats["inputs"] = i
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (300 ticks, 1 repeat)")
    parser.add_argument("--ticks", type=int, default=None, help="ticks per run (default 3000 = 10 min)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs; the best and median are reported",
    )
    args = parser.parse_args()
    ticks = args.ticks or (300 if args.quick else 3000)
    repeats = args.repeats or (1 if args.quick else 3)
    quiet_logging()

    run_lockstep(scenario, 50)  # warm-up: imports, first-use caches
    walls, stats = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        stats = run_lockstep(scenario, ticks)
        walls.append(time.perf_counter() - start)
    best, med = min(walls), statistics.median(walls)

    virtual = ticks * PERIOD
    print(f"lockstep: {ticks} ticks at {PERIOD * 1e3:g} ms ({virtual / 60:g} virtual min), 7 demo actors, {cpu_name()}")
    print(
        f"{'wall s (best)':>14}{'wall s (median)':>17}{'ticks/s':>10}{'messages':>10}{'msgs/s':>10}{'x realtime':>12}"
    )
    print(
        f"{best:>14.3f}{med:>17.3f}{ticks / best:>10.0f}{stats['messages']:>10}{stats['messages'] / best:>10.0f}"
        f"{virtual / best:>12.0f}"
    )
    emit(
        {
            "wall_seconds": round(best, 4),
            "wall_seconds_median": round(med, 4),
            "target": 1.0,
            "ticks": ticks,
            "ticks_per_s": round(ticks / best, 1),
            "messages": stats["messages"],
            "messages_per_s": round(stats["messages"] / best, 1),
            "inputs": stats["inputs"],
            "virtual_seconds": virtual,
            "repeats": repeats,
            "cpu": cpu_name(),
        }
    )


if __name__ == "__main__":
    main()
