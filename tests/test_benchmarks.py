"""Every benchmark runs (in its quick mode) and ends with one JSON object naming its figures.

Only that the figures exist is checked: speed targets are measured by the benchmarks themselves, side by
side, never asserted by a test."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

FIGURES = {
    "bus_hop.py": ["ratio_vs_trio_channel", "ratio_data_path"],
    "tick_lateness.py": ["p50_ms_idle", "p99_ms_idle", "p50_ms_loaded", "p99_ms_loaded"],
    "sessions.py": ["max_sessions"],
    "lockstep.py": ["wall_seconds"],
    "perception.py": ["realtime_factor"],
    "tools.py": ["concurrency_ratio"],
    "suite.py": ["wall_seconds", "virtual_seconds", "x_realtime"],
    "model_step.py": ["step_p99_ms", "history_growth_ratio", "speedup_vs_reprefill"],
    "model_quality.py": ["response_latency_s", "stop_latency_s", "takeover_pause", "control_agreement", "oracle"],
    "serve.py": ["http_overhead_ms_p50", "http_overhead_ms_p99", "sessions_p99_under_100ms"],
    "serve_load.py": ["server_exits", "crossed_or_lost_turns", "request_ms_p50", "request_ms_p99", "rss_mb_before",
                      "rss_mb_after"],
    "sglang_session.py": ["tick_latency_ms_p99", "cached_growth_per_tick", "cached_equals_previous_total"],
}


@pytest.mark.parametrize("script", sorted(FIGURES))
def test_benchmark_prints_its_figures_last(script):
    args = [sys.executable, str(BENCHMARKS / script)]
    if "--quick" in (BENCHMARKS / script).read_text():
        args.append("--quick")
    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    for name in FIGURES[script]:
        assert name in figures
