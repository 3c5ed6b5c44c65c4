"""Helpers shared by the runtime benchmarks: percentiles, a CPU description, quiet logging, the JSON last line."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

try:
    import microturn  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from microturn.runtime import configure_logging

__all__ = [
    "CpuMeter",
    "cores_available",
    "cpu_name",
    "emit",
    "load_average",
    "percentile",
    "pin_to_one_core",
    "quiet_logging",
]


USER_LINES = ["hello there", "what time is it", "tell me a story", "wait, stop", "thanks, bye"]
"""What the simulated user says, in turn, in the runtime benchmarks."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def cpu_name() -> str:
    """The CPU model as the kernel names it (falls back to the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores_available() -> int:
    """How many cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pin_to_one_core(core: int = 0) -> int | None:
    """Pin this process to one core (Linux); returns the core, or None where the platform cannot."""
    try:
        os.sched_setaffinity(0, {core})
    except (AttributeError, OSError):
        return None
    return core


class CpuMeter:
    """What the OS gave this process over a stretch of wall time: its CPU share (process CPU seconds / wall
    seconds) and its involuntary context switches (preemptions: another process took the core)."""

    def __enter__(self) -> Self:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self._ivcsw = _ivcsw()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.share = (time.process_time() - self._cpu) / self.wall if self.wall > 0 else 0.0
        self.preemptions = _ivcsw() - self._ivcsw


def _ivcsw() -> int:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    except (ImportError, OSError):  # not Unix
        return 0


def load_average() -> float | None:
    """The 1-minute load average (other processes competing for the cores), where the platform has one."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def quiet_logging() -> None:
    """Only warnings and errors from the runtime (on stderr), so no log line lands after the JSON line."""
    configure_logging("warning")


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON object that must be the script's last line (NaN, which JSON lacks, becomes null)."""
    clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in result.items()}
    sys.stdout.flush()
    print(json.dumps(clean, allow_nan=False), flush=True)


STATES = ("speaking", "pausing", "yielding", "thinking", "speaking", "speaking")


def tick_input(t: int, rng: Any) -> Any:
    """A plausible model tick (a ``StepInput``): 4 dMel frames, a few words every couple of seconds, a changing
    dialog state. ``rng`` is a numpy Generator."""
    from microturn.messages import DialogState, InputChunk
    from microturn.model.protocol import StepInput

    text = "what time is it" if t % 10 == 3 else ""
    chunk = InputChunk(tick=t, dmel=rng.integers(0, 16, 320, dtype="uint8").tobytes(), n_frames=4, text=text,
                       speech_prob=float(rng.random()))
    dialog = DialogState(floor="user", user=STATES[(t // 5) % len(STATES)], assistant="silent")  # type: ignore[arg-type]
    return StepInput(chunk=chunk, dialog=dialog, speaking=False)
