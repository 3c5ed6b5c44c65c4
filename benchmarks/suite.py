"""The whole scenario library in virtual time: how much faster than real time the runner simulates it.

Runs every scenario under ``microturn/scenarios/library`` (or ``--dir``) with ``run_suite`` — the same path
as ``microturn run --suite``: load and validate the TOML, prepare the timeline (speech from the espeak-ng
cache), run the live loop (clock, perception with dMel and VAD, dialog state, the scripted policy, output
mixer, the scenario's world) in lockstep, judge the expectations and compute the metrics. A warm-up pass first
fills the speech cache and the imports, so the timed passes measure the simulation, not espeak-ng.

The target (the issue's): at least 100x faster than real time with the scripted policy.

    python benchmarks/suite.py [--quick] [--repeats 3] [--dir DIR]

Prints a table, then, as its last line, one JSON object:
{"wall_seconds": best pass, "virtual_seconds": session time simulated per pass, "x_realtime": ..., ...}
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_name, emit, quiet_logging

from microturn.scenarios.runner import run_suite

LIBRARY = Path(__file__).resolve().parents[1] / "microturn" / "scenarios" / "library"
TARGET = 100.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timed pass")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes (default 3; the best is reported)")
    parser.add_argument("--dir", default=str(LIBRARY), help="the folder of scenarios (default: the library)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    quiet_logging()

    start = time.perf_counter()
    warm = run_suite(args.dir)  # imports, the espeak-ng cache, first-use caches
    warm_wall = time.perf_counter() - start
    walls = []
    suite = warm
    for _ in range(repeats):
        start = time.perf_counter()
        suite = run_suite(args.dir)
        walls.append(time.perf_counter() - start)
    best, median = min(walls), statistics.median(walls)
    virtual = sum(r.scenario.duration for r in suite.results)
    messages = sum(len(r.messages) for r in suite.results)
    passed = sum(r.ok for r in suite.results)

    print(f"scenario suite: {len(suite.results)} scenarios from {args.dir}, scripted policy, lockstep, {cpu_name()}")
    print(f"{'wall s (best)':>14}{'wall s (median)':>17}{'virtual s':>11}{'x realtime':>12}{'messages':>10}"
          f"{'passed':>8}{'warm-up s':>11}")
    print(f"{best:>14.3f}{median:>17.3f}{virtual:>11.1f}{virtual / best:>12.0f}{messages:>10}"
          f"{passed:>5}/{len(suite.results):<2}{warm_wall:>11.2f}")
    emit(
        {
            "wall_seconds": round(best, 4),
            "wall_seconds_median": round(median, 4),
            "virtual_seconds": round(virtual, 3),
            "x_realtime": round(virtual / best, 1),
            "target_x_realtime": TARGET,
            "scenarios": len(suite.results),
            "passed": passed,
            "errors": len(suite.errors),
            "messages": messages,
            "warmup_wall_seconds": round(warm_wall, 3),
            "repeats": repeats,
            "cpu": cpu_name(),
        }
    )


if __name__ == "__main__":
    main()
