"""One message through a chain of five actors, end to end, beside pipecat's five-processor pipeline.

*microturn*: a realtime-mode session of five actors in a chain: the driver publishes ``Hop0``, actor 1
(subscribed to ``Hop0``) publishes ``Hop1``, ... actor 5 (subscribed to ``Hop4``) sets the driver's event.
Five bus hops, each a stamped copy, a mailbox put, the reader's wake-up and the actor's serve loop.
*pipecat*: ``Pipeline([Stage x 5])`` in a ``PipelineWorker`` under a ``WorkerRunner``; the driver
``await worker.queue_frame(TextFrame(...))`` and awaits a future the fifth processor resolves (see
``benchmarks/_pipecat_pipeline.py``, run in a subprocess of a benchmark-only venv that has ``pipecat-ai``).

Per message, on both sides, one at a time (latency, not throughput): ``time.perf_counter_ns()`` just before the
message is built and published, and again just after the driver's ``await`` returns, under each framework's
real clock. Repeats alternate sides (microturn, pipecat, pipecat, microturn, ...) so that machine load hits both
equally; each repeat opens a fresh session / pipeline and warms it with a few messages first. ``--gc-freeze``
(both sides alike) collects and freezes the heap before each timed section, which takes the old generations'
collections of the startup objects out of the tail; by default the garbage collector runs as it would live.

Install pipecat for the comparison (never into the project's venv)::

    python3 -m venv /work/bench-venv && /work/bench-venv/bin/pip install pipecat-ai==1.14.0

    python benchmarks/pipeline.py [--quick] [--messages N] [--repeats R] [--pipecat-python PATH] [--gc-freeze]

Prints a table, then, as its last line, one JSON object:
{"p50_us": ..., "p99_us": ..., "pipecat_p50_us": ..., "pipecat_p99_us": ..., "ratios": {...}, ...}
(the pipecat figures are null, with ``pipecat_missing`` saying how to install it, when it cannot be run).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio
import trio.testing
from _common import cpu_name, emit, load_average, percentile, quiet_logging

from microturn.messages import DataMessage
from microturn.runtime import Actor, Overflow, Subscribe, open_session

STAGES = 5
TEXT = "hello"
DEFAULT_PIPECAT_PYTHON = "/work/bench-venv/bin/python"
PIPECAT_ENV = "MICROTURN_PIPECAT_PYTHON"
PIPECAT_CHILD = Path(__file__).resolve().parent / "_pipecat_pipeline.py"
INSTALL_HINT = (
    "install pipecat into a benchmark-only venv: python3 -m venv /work/bench-venv && "
    "/work/bench-venv/bin/pip install pipecat-ai==1.14.0 (or pass --pipecat-python PATH / set "
    f"{PIPECAT_ENV})"
)
GOAL_P50_US = 85.0


# --- microturn ------------------------------------------------------------------------------------------------


class _Text(DataMessage, frozen=True, kw_only=True):
    """A line of text, like pipecat's ``TextFrame``; each hop of the chain is its own sibling subclass, so each
    actor's subscription routes exactly one hop to it."""

    text: str


class Hop0(_Text, frozen=True, kw_only=True):
    """What the driver publishes into the chain."""


class Hop1(_Text, frozen=True, kw_only=True):
    """Actor 1 to actor 2."""


class Hop2(_Text, frozen=True, kw_only=True):
    """Actor 2 to actor 3."""


class Hop3(_Text, frozen=True, kw_only=True):
    """Actor 3 to actor 4."""


class Hop4(_Text, frozen=True, kw_only=True):
    """Actor 4 to actor 5."""


HOPS: tuple[type[_Text], ...] = (Hop0, Hop1, Hop2, Hop3, Hop4)


class Stage(Actor):
    """Actor ``index + 1`` of the chain: takes ``HOPS[index]``, publishes the next hop with the same text."""

    def __init__(self, index: int) -> None:
        # Per instance, not per class: the five stages share one class but each takes a different hop.
        self.subscriptions = (Subscribe(HOPS[index], Overflow.BLOCK, maxlen=256),)
        super().__init__(f"stage{index + 1}")
        self.next = HOPS[index + 1]

    async def handle(self, message: Any) -> None:
        if isinstance(message, _Text):
            await self.publish(self.next(text=message.text))


class LastStage(Actor):
    """The fifth actor: wakes the driver for each ``Hop4``."""

    subscriptions = (Subscribe(Hop4, Overflow.BLOCK, maxlen=256),)

    def __init__(self) -> None:
        super().__init__(f"stage{STAGES}")
        self.done: trio.Event | None = None

    async def handle(self, message: Any) -> None:
        if type(message) is Hop4 and self.done is not None:
            self.done.set()


async def microturn_run(n: int, gc_freeze: bool) -> list[int]:
    """``n`` end-to-end latencies (ns) through a fresh realtime session of five chained actors."""
    last = LastStage()
    actors: list[Actor] = [Stage(i) for i in range(STAGES - 1)]
    actors.append(last)
    async with open_session(actors, mode="realtime", session_id="pipeline") as session:
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(min(n, 200)):  # warm-up: route caches, first-use paths
            last.done = done = trio.Event()
            await session.publish(Hop0(text=TEXT))
            await done.wait()
        gc.collect()
        if gc_freeze:
            gc.freeze()
        clock = time.perf_counter_ns
        latencies: list[int] = []
        for _ in range(n):
            last.done = done = trio.Event()
            start = clock()
            await session.publish(Hop0(text=TEXT))
            await done.wait()
            latencies.append(clock() - start)
        if gc_freeze:
            gc.unfreeze()
    return latencies


# --- pipecat, in its own interpreter --------------------------------------------------------------------------


class PipecatSide:
    """The pipecat child process (``_pipecat_pipeline.py`` under the bench venv's python), kept running across
    repeats so each repeat costs one request, not an interpreter start and pipecat's imports."""

    def __init__(self, python: str) -> None:
        # Lives as long as the child (read back only when it dies); closed in close().
        self._stderr: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [python, str(PIPECAT_CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=tempfile.gettempdir(),  # so no module of this checkout shadows one of pipecat's
        )
        hello = self._read()
        if not hello.get("ready"):
            self.close()
            raise RuntimeError(f"pipecat could not be imported by {python}: {hello.get('error')}")
        self.version = str(hello.get("pipecat"))

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self._stderr.seek(0)
            tail = self._stderr.read()[-1500:]
            raise RuntimeError(f"the pipecat process ended (exit {self.proc.poll()}): {tail}")
        return json.loads(line)

    def run(self, n: int, gc_freeze: bool) -> list[int]:
        """``n`` end-to-end latencies (ns) through a fresh five-processor pipeline."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"messages": n, "gc_freeze": gc_freeze}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "latencies_ns" not in reply:
            raise RuntimeError(f"the pipecat process refused the request: {reply.get('error')}")
        return [int(x) for x in reply["latencies_ns"]]

    def close(self) -> None:
        """End the child (closing its stdin ends its request loop)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def pipecat_python(arg: str | None) -> str | None:
    """The interpreter to run pipecat with: ``--pipecat-python``, else ``$MICROTURN_PIPECAT_PYTHON``, else the
    default bench venv when it exists; None when there is none (or the argument is ``none``)."""
    if arg is not None:
        return None if arg.lower() in ("", "none") else arg
    env = os.environ.get(PIPECAT_ENV)
    if env:
        return env
    return DEFAULT_PIPECAT_PYTHON if Path(DEFAULT_PIPECAT_PYTHON).exists() else None


# --- driver ---------------------------------------------------------------------------------------------------


def _us(values: list[int], q: float) -> float:
    return round(percentile(values, q) / 1e3, 1) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (300 messages, 2 repeats)")
    parser.add_argument("--messages", type=int, default=None, help="messages per repeat and side (default 2000)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per side, interleaved (default 10)")
    parser.add_argument(
        "--pipecat-python",
        default=None,
        help=f"python of a venv with pipecat-ai (default ${PIPECAT_ENV}, else {DEFAULT_PIPECAT_PYTHON} if it "
        "exists; 'none' skips pipecat)",
    )
    parser.add_argument(
        "--gc-freeze", action="store_true", help="collect and gc.freeze() before each timed section, on both sides"
    )
    args = parser.parse_args()
    n = args.messages or (300 if args.quick else 2000)
    repeats = args.repeats or (2 if args.quick else 10)
    for name, value in (("messages", n), ("repeats", repeats)):
        if not 0 < value <= 1_000_000:
            parser.error(f"--{name} must be 1..1000000, got {value}")
    quiet_logging()

    python = pipecat_python(args.pipecat_python)
    pipecat: PipecatSide | None = None
    missing: str | None = None
    if python is None:
        missing = f"no pipecat python: {INSTALL_HINT}"
    else:
        try:
            pipecat = PipecatSide(python)
        except (OSError, RuntimeError) as exc:
            missing = f"{exc}; {INSTALL_HINT}"

    ours: list[int] = []
    theirs: list[int] = []
    try:
        for r in range(repeats):
            # microturn first on even repeats, pipecat first on odd ones: neither always runs on a warmer machine
            sides = ["microturn", "pipecat"] if r % 2 == 0 else ["pipecat", "microturn"]
            for side in sides:
                if side == "microturn":
                    ours += trio.run(microturn_run, n, args.gc_freeze)
                elif pipecat is not None:
                    theirs += pipecat.run(n, args.gc_freeze)
    finally:
        if pipecat is not None:
            pipecat.close()

    fig = {"p50_us": _us(ours, 50), "p90_us": _us(ours, 90), "p99_us": _us(ours, 99), "max_us": _us(ours, 100)}
    fig |= {f"pipecat_{k}": _us(theirs, q) for k, q in (("p50_us", 50), ("p90_us", 90), ("p99_us", 99),
                                                         ("max_us", 100))}
    ratios = {
        k: round(fig[f"{k}_us"] / fig[f"pipecat_{k}_us"], 3) if theirs else None for k in ("p50", "p90", "p99")
    }
    goal = fig["p50_us"] < GOAL_P50_US and bool(theirs) and fig["p99_us"] < fig["pipecat_p99_us"]

    print(f"one message through {STAGES} stages, end to end: {n} messages x {repeats} repeats per side, "
          f"interleaved, gc {'frozen' if args.gc_freeze else 'running'}, {cpu_name()}")
    print(f"{'side':<12}{'p50 us':>10}{'p90 us':>10}{'p99 us':>10}{'max us':>10}")
    print(f"{'microturn':<12}{fig['p50_us']:>10.1f}{fig['p90_us']:>10.1f}{fig['p99_us']:>10.1f}{fig['max_us']:>10.1f}")
    if theirs:
        print(f"{'pipecat':<12}{fig['pipecat_p50_us']:>10.1f}{fig['pipecat_p90_us']:>10.1f}"
              f"{fig['pipecat_p99_us']:>10.1f}{fig['pipecat_max_us']:>10.1f}")
        print(f"{'ratio':<12}{ratios['p50']:>10.3f}{ratios['p90']:>10.3f}{ratios['p99']:>10.3f}")
    else:
        print(f"pipecat: not measured ({missing})")
    emit(
        fig
        | {
            "ratios": ratios,
            "goal": f"p50_us < {GOAL_P50_US:g} and p99_us < pipecat_p99_us",
            "goal_met": goal if theirs else None,
            "stages": STAGES,
            "messages": n,
            "repeats": repeats,
            "gc_freeze": args.gc_freeze,
            "pipecat": pipecat.version if pipecat is not None else None,
            "pipecat_missing": missing,
            "load_average": load_average(),
            "cpu": cpu_name(),
        }
    )


if __name__ == "__main__":
    main()
