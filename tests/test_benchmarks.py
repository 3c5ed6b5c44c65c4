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
    "asr.py": ["wer_general_lm", "wer_domain_lm", "rtf"],
    "tools.py": ["concurrency_ratio"],
    "suite.py": ["wall_seconds", "virtual_seconds", "x_realtime"],
    "model_step.py": ["step_p99_ms", "history_growth_ratio", "speedup_vs_reprefill"],
    "model_quality.py": ["response_latency_s", "stop_latency_s", "takeover_pause", "control_agreement", "content_exact",
                         "invented_facts", "oracle"],
    "serve.py": ["http_overhead_ms_p50", "http_overhead_ms_p99", "sessions_p99_under_100ms"],
    "serve_load.py": ["server_exits", "crossed_or_lost_turns", "request_ms_p50", "request_ms_p99", "rss_mb_before",
                      "rss_mb_after"],
    "eot.py": ["accuracy_transcript", "accuracy_prosody", "accuracy_recognized", "smart_turn_accuracy",
               "speech_end_error_ms_median", "take_turn_ms_median", "recognizer_rtf"],
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


def test_pipeline_benchmark_runs_without_pipecat():
    """The five-actor pipeline benchmark needs no pipecat: its figures come out null, with the install hint."""
    args = [sys.executable, str(BENCHMARKS / "pipeline.py"), "--quick", "--messages", "50", "--pipecat-python", "none"]
    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("p50_us", "p99_us"):
        assert isinstance(figures[name], float) and figures[name] > 0
    for name in ("pipecat_p50_us", "pipecat_p99_us"):
        assert figures[name] is None
    assert set(figures["ratios"]) >= {"p50", "p99"}
    assert figures["goal_met"] is None
    assert "pip install pipecat-ai" in figures["pipecat_missing"]


def test_pipeline_benchmark_reports_a_broken_pipecat_python():
    """A --pipecat-python that cannot import pipecat (here: this interpreter, which lacks it) is reported, not
    a traceback."""
    try:
        import pipecat  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("this interpreter has pipecat")
    args = [sys.executable, str(BENCHMARKS / "pipeline.py"), "--quick", "--messages", "20", "--repeats", "1",
            "--pipecat-python", sys.executable]
    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["pipecat_p50_us"] is None
    assert "could not be imported" in figures["pipecat_missing"]


def test_compare_revs_runs_both_trees_and_removes_its_worktree():
    """compare_revs checks a revision out into a temporary worktree, runs a benchmark from both trees and
    leaves no worktree behind; a revision that does not exist is a clear error, not a traceback."""
    repo = BENCHMARKS.parent
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    args = [sys.executable, str(BENCHMARKS / "compare_revs.py"), "HEAD", "--quick", "--bench", "lockstep.py",
            "--rounds", "1"]
    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(figures["benchmarks"]) == {"lockstep.py"}
    assert figures["benchmarks"]["lockstep.py"]["ratio"] > 0
    assert figures["new"] == "WORKTREE" and len(figures["old"]) == 40
    # Only its own worktrees (under a compare-revs- folder) are checked: others may come and go meanwhile.
    listed = subprocess.run(["git", "-C", str(repo), "worktree", "list", "--porcelain"], check=True,
                            capture_output=True, text=True).stdout
    assert "compare-revs-" not in listed

    bad = subprocess.run([sys.executable, str(BENCHMARKS / "compare_revs.py"), "no-such-revision"], check=False,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "'no-such-revision' is not a commit" in bad.stderr
    assert "Traceback" not in bad.stderr
