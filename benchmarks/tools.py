"""Tool concurrency: 100 calls of a tool that takes 50 ms, all at once, through the tool runner actor.

The tool waits 50 ms of session time (``ctx.sleep(0.05)``: virtual in lockstep). The 100 ``ToolCall`` s are
published at one instant; the figure is the span from the first call to the last ``ToolResult``, in session
time, divided by one call's 50 ms. Run one after another the span would be 100 x 50 ms (``serial_ratio``, the
same calls with the tool's concurrency limit set to 1, side by side); the target is <= 1.2 x 50 ms, i.e.
``concurrency_ratio`` <= 1.2. The same run in realtime mode (trio's real clock, so the figure includes the
runtime's own overhead per call) gives ``realtime_ratio``.

    python benchmarks/tools.py [--quick] [--calls 100]

Prints a table, then, as its last line, one JSON object:
{"concurrency_ratio": ..., "target": 1.2, "serial_ratio": ..., "realtime_ratio": ..., ...}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
from _common import cpu_name, emit, quiet_logging

from microturn.actors.tool_runner import ToolRunner
from microturn.messages import Message, ToolCall, ToolResult
from microturn.runtime import open_session, run_lockstep
from microturn.tools import ToolContext, ToolRegistry, tool

TOOL_SECONDS = 0.05
TARGET = 1.2


def make_registry(concurrency: int) -> ToolRegistry:
    """One tool that takes ``TOOL_SECONDS`` of session time, allowing ``concurrency`` calls at once."""

    @tool(name="fifty_ms", concurrency=concurrency, timeout=600.0)
    async def fifty_ms(ctx: ToolContext, n: int) -> int:
        """Wait 50 ms of session time, then echo n."""
        await ctx.sleep(TOOL_SECONDS)
        return n

    return ToolRegistry([fifty_ms])


async def burst(calls: int, concurrency: int, mode: str) -> dict:
    """Publish ``calls`` calls at one instant; returns the span (session seconds) and a check of the results."""
    log: list[Message] = []
    done = trio.Event()
    count = [0]

    def tap(message: Message) -> None:
        log.append(message)
        if isinstance(message, ToolResult):
            count[0] += 1
            if count[0] == calls:
                done.set()

    started = time.perf_counter()
    async with open_session([ToolRunner(make_registry(concurrency))], mode=mode, taps=[tap]) as session:  # type: ignore[arg-type]
        batch = [ToolCall(call_id=f"c{i}", name="fifty_ms", args={"n": i}) for i in range(calls)]
        if mode == "lockstep":
            for call in batch:
                session.schedule(call, at=0.1)
        else:
            for call in batch:
                await session.publish(call)
        with trio.fail_after(calls * TOOL_SECONDS * 4 + 30):
            await done.wait()
    wall = time.perf_counter() - started
    sent = [m for m in log if isinstance(m, ToolCall)]
    results = [m for m in log if isinstance(m, ToolResult)]
    assert len(results) == calls and all(r.ok for r in results), "every call must succeed"
    assert sorted(r.value for r in results) == list(range(calls))
    span = max(r.stamp.time for r in results) - min(c.stamp.time for c in sent)  # type: ignore[union-attr]
    return {"span": span, "ratio": span / TOOL_SECONDS, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="skip the repeats (same figures, one run each)")
    args = parser.parse_args()
    quiet_logging()
    repeats = 1 if args.quick else 3
    concurrent = [run_lockstep(burst, args.calls, args.calls, "lockstep") for _ in range(repeats)]
    serial = run_lockstep(burst, args.calls, 1, "lockstep")
    realtime = [trio.run(burst, args.calls, args.calls, "realtime") for _ in range(repeats)]
    best_real = min(realtime, key=lambda r: r["ratio"])
    lock = concurrent[0]
    assert all(r["span"] == lock["span"] for r in concurrent), "lockstep figures must not vary between runs"

    print(f"tool runner: {args.calls} calls of a {TOOL_SECONDS * 1000:.0f} ms tool, published at one instant")
    print(f"cpu: {cpu_name()}")
    print(f"{'run':<34}{'span (session)':>16}{'x one call':>12}{'wall':>10}")
    print(f"{'lockstep, concurrency ' + str(args.calls):<34}{lock['span'] * 1000:>13.1f} ms{lock['ratio']:>12.3f}"
          f"{lock['wall']:>9.3f}s")  # fmt: skip
    print(f"{'lockstep, concurrency 1 (serial)':<34}{serial['span'] * 1000:>13.1f} ms{serial['ratio']:>12.3f}"
          f"{serial['wall']:>9.3f}s")  # fmt: skip
    print(f"{'realtime, concurrency ' + str(args.calls) + ' (best)':<34}{best_real['span'] * 1000:>13.1f} ms"
          f"{best_real['ratio']:>12.3f}{best_real['wall']:>9.3f}s")  # fmt: skip
    print(f"target: concurrency_ratio <= {TARGET}  ->  {'met' if lock['ratio'] <= TARGET else 'NOT met'}")
    emit(
        {
            "concurrency_ratio": round(lock["ratio"], 4),
            "target": TARGET,
            "calls": args.calls,
            "tool_ms": TOOL_SECONDS * 1000,
            "serial_ratio": round(serial["ratio"], 4),
            "realtime_ratio": round(best_real["ratio"], 4),
            "lockstep_wall_seconds": round(min(r["wall"] for r in concurrent), 4),
        }
    )


if __name__ == "__main__":
    main()
