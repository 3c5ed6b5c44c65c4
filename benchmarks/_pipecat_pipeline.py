"""The pipecat side of ``benchmarks/pipeline.py``: five FrameProcessors in one Pipeline, timed per frame.

Runs under a separate, benchmark-only interpreter that has ``pipecat-ai`` installed (never the project's
venv, so it imports nothing from microturn). It talks to its parent over stdin/stdout, one JSON object per
line, so the parent can interleave repeats of both sides:

- on start it prints ``{"ready": true, "pipecat": VERSION}`` (or ``{"ready": false, "error": ...}``);
- for each line ``{"messages": N, "gc_freeze": BOOL}`` it builds a fresh ``PipelineWorker`` around
  ``Pipeline([Stage x 5])``, starts it under a ``WorkerRunner``, pushes N ``TextFrame`` one at a time with
  ``worker.queue_frame`` and awaits each at the fifth processor, then ends the worker and prints
  ``{"latencies_ns": [...]}``;
- end of input ends it.

Each latency is ``time.perf_counter_ns()`` from just before the frame is built and queued to just after the
driver's ``await`` on the future the fifth processor resolves — the same span the microturn side measures.
Everything pipecat can leave out is left out (no RTVI, no turn tracking, no metrics, no idle timeout, no
observers), so pipecat is measured at its fastest.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time

STAGES = 5


def _reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    """Serve timing requests from the parent until stdin closes."""
    try:
        from loguru import logger

        logger.remove()  # pipecat logs every start and stop at INFO; only real problems, on stderr
        logger.add(sys.stderr, level="WARNING")
        import pipecat
        from pipecat.frames.frames import Frame, StartFrame, TextFrame
        from pipecat.pipeline.pipeline import Pipeline
        from pipecat.pipeline.worker import PipelineParams, PipelineWorker
        from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
        from pipecat.workers.runner import WorkerRunner
    except Exception as exc:  # noqa: BLE001 - the parent reports any import failure as "pipecat missing"
        _reply({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return

    class Stage(FrameProcessor):
        """Passes every frame on, as a processor that does nothing else would."""

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)

    class LastStage(FrameProcessor):
        """The fifth processor: resolves the driver's future for each text frame (and passes the rest on)."""

        def __init__(self) -> None:
            super().__init__()
            self.waiter: asyncio.Future | None = None

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, TextFrame) and self.waiter is not None:
                waiter, self.waiter = self.waiter, None
                waiter.set_result(None)
            else:
                await self.push_frame(frame, direction)

    async def run_once(n: int, gc_freeze: bool) -> list[int]:
        last = LastStage()
        pipeline = Pipeline([*(Stage() for _ in range(STAGES - 1)), last])
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(enable_metrics=False, enable_usage_metrics=False, enable_heartbeats=False),
            cancel_on_idle_timeout=False,
            idle_timeout_secs=None,
            enable_rtvi=False,
            enable_turn_tracking=False,
            check_dangling_tasks=False,
        )
        started = asyncio.Event()

        @worker.event_handler("on_pipeline_started")
        async def _on_started(worker: object, frame: StartFrame) -> None:
            started.set()

        runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        await runner.add_workers(worker)
        latencies: list[int] = []

        async def drive() -> None:
            await asyncio.wait_for(started.wait(), timeout=30)
            loop = asyncio.get_running_loop()
            for _ in range(min(n, 200)):  # warm-up: first-use paths of every processor
                last.waiter = loop.create_future()
                await worker.queue_frame(TextFrame(text="hello"))
                await last.waiter
            gc.collect()
            if gc_freeze:
                gc.freeze()
            clock = time.perf_counter_ns
            for _ in range(n):
                waiter = last.waiter = loop.create_future()
                start = clock()
                await worker.queue_frame(TextFrame(text="hello"))
                await waiter
                latencies.append(clock() - start)
            if gc_freeze:
                gc.unfreeze()
            await runner.cancel("benchmark done")

        await asyncio.gather(runner.run(), drive())
        return latencies

    _reply({"ready": True, "pipecat": getattr(pipecat, "__version__", "unknown")})
    for line in sys.stdin:
        request = json.loads(line)
        n = int(request["messages"])
        if not 0 < n <= 1_000_000:
            _reply({"error": f"messages must be 1..1000000, got {n!r}"})
            continue
        latencies = asyncio.run(run_once(n, bool(request.get("gc_freeze", False))))
        _reply({"latencies_ns": latencies})


if __name__ == "__main__":
    main()
