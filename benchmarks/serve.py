"""The HTTP path's cost per tick, side by side with the in-process step, and sessions per server process.

1. **Overhead.** The same ticks (4 dMel frames, some words, a changing dialog state) stepped in process
   (``LocalSession.step_sync``) and through ``microturn serve`` (a subprocess on loopback, same checkpoint) by the
   sglang backend. Per tick, the HTTP overhead is the client's round trip minus the server's own time for that
   turn (``meta_info.e2e_latency``: thread hop and model step): what HTTP, JSON and base64 add.
2. **Capacity.** N sessions at once, each sending one tick every 200 ms (paced like a live session); N doubles
   until the p99 round trip reaches 100 ms. ``sessions_p99_under_100ms`` is the largest N that stayed under.

The model is UNTRAINED (random weights): it never ends a tick early, so every tick decodes all K tokens.

    python benchmarks/serve.py [--quick] [--config embedded] [--ticks 100]

Prints a table, then one JSON object as the last line: ``http_overhead_ms_p50``, ``http_overhead_ms_p99``
(target ≤ 5 ms on loopback), the in-process and HTTP step percentiles, and ``sessions_p99_under_100ms``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import microturn  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import trio
from _common import cpu_name, percentile, quiet_logging, tick_input

from microturn.model.config import PRESETS
from microturn.model.local import LocalBackend, save_checkpoint
from microturn.model.protocol import ModelSpec
from microturn.model.sglang import open_sglang_backend

ROOT = Path(__file__).resolve().parents[1]
def start_server(checkpoint: Path) -> tuple[subprocess.Popen[str], str]:
    """``microturn serve`` on a free port, as its own process; returns it and its URL."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "microturn.cli", "serve", "--port", "0", "--checkpoint",
                             str(checkpoint), "--threads", "1"], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"microturn serve did not start: {line!r}")
    return proc, line.split()[-1]


async def overhead(url: str, backend: LocalBackend, n: int) -> dict[str, list[float]]:
    """Step the same ticks in process and over HTTP; per-tick times (seconds)."""
    rng = np.random.default_rng(0)
    inputs = [tick_input(t, rng) for t in range(n + 10)]
    local = await backend.open_session(ModelSpec())
    inproc = []
    for si in inputs:
        t0 = time.perf_counter()
        local.step_sync(si)
        inproc.append(time.perf_counter() - t0)
    async with open_sglang_backend(url, realtime=False) as remote:
        session = await remote.open_session(ModelSpec())
        for si in inputs:
            await session.step(si)
    turns = session.turns[10:]  # the first ticks warm both sides up
    return {
        "inproc": inproc[10:],
        "http": [t.latency_s for t in turns],
        "server": [t.server_s or 0.0 for t in turns],
        "overhead": [t.latency_s - (t.server_s or 0.0) for t in turns],
    }


async def paced(url: str, sessions: int, ticks: int) -> list[float]:
    """``sessions`` sessions each stepping ``ticks`` ticks 200 ms apart (staggered); all round trips (s)."""
    latencies: list[float] = []
    async with open_sglang_backend(url, realtime=False) as remote:
        opened = [await remote.open_session(ModelSpec()) for _ in range(sessions)]
        start = trio.current_time() + 0.05

        async def run(i: int) -> None:
            rng = np.random.default_rng(i)
            phase = 0.2 * i / sessions
            for t in range(ticks):
                await trio.sleep_until(start + phase + 0.2 * t)
                t0 = time.perf_counter()
                await opened[i].step(tick_input(t, rng))
                latencies.append(time.perf_counter() - t0)

        async with trio.open_nursery() as nursery:
            for i in range(sessions):
                nursery.start_soon(run, i)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: the tiny model, few ticks")
    parser.add_argument("--config", default=None, choices=sorted(PRESETS), help="model preset (default embedded; "
                        "quick: tiny)")
    parser.add_argument("--ticks", type=int, default=None, help="ticks for the overhead (default 200; quick 20)")
    args = parser.parse_args()
    quiet_logging()
    torch.set_num_threads(1)
    config = args.config or ("tiny" if args.quick else "embedded")
    n = args.ticks or (20 if args.quick else 200)
    levels = [1, 2, 4] if args.quick else [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96]
    paced_ticks = 5 if args.quick else 15
    backend = LocalBackend.random(PRESETS[config](), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(backend.model, Path(tmp) / "model.pt", {"untrained": True})
        proc, url = start_server(checkpoint)
        try:
            times = trio.run(overhead, url, backend, n)
            capacity = []
            for level in levels:
                lat = trio.run(paced, url, level, paced_ticks)
                p99 = percentile(lat, 99) * 1e3
                capacity.append((level, percentile(lat, 50) * 1e3, p99))
                if p99 >= 100:
                    break
        finally:
            proc.terminate()
            proc.wait(30)

    def ms(xs: list[float], q: float) -> float:
        return round(percentile(xs, q) * 1e3, 3)

    passing = [level for level, _, p99 in capacity if p99 < 100]
    figures = {
        "config": config,
        "quick": args.quick,
        "untrained_worst_case": True,
        "ticks": n,
        "inproc_step_ms_p50": ms(times["inproc"], 50),
        "inproc_step_ms_p99": ms(times["inproc"], 99),
        "http_step_ms_p50": ms(times["http"], 50),
        "http_step_ms_p99": ms(times["http"], 99),
        "server_step_ms_p50": ms(times["server"], 50),
        "http_overhead_ms_p50": ms(times["overhead"], 50),
        "http_overhead_ms_p99": ms(times["overhead"], 99),
        "sessions_p99_under_100ms": max(passing) if passing else 0,
        "capacity_limited_by_levels": bool(passing) and max(passing) == levels[-1],
        "capacity": [{"sessions": s, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2)} for s, p50, p99 in capacity],
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
    }
    print(f"per tick ({config}, {n} ticks)     {'p50 ms':>8} {'p99 ms':>8}")
    print(f"  in process step           {figures['inproc_step_ms_p50']:>8.2f} {figures['inproc_step_ms_p99']:>8.2f}")
    print(f"  over HTTP (round trip)    {figures['http_step_ms_p50']:>8.2f} {figures['http_step_ms_p99']:>8.2f}")
    print(f"  HTTP overhead             {figures['http_overhead_ms_p50']:>8.2f} {figures['http_overhead_ms_p99']:>8.2f}")
    print("sessions at once (one tick per 200 ms each):")
    for s, p50, p99 in capacity:
        print(f"  {s:>4} sessions   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms{'   <- over 100 ms' if p99 >= 100 else ''}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
