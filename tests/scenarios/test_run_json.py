"""``microturn run --json FILE``: one JSON object per scenario, with every verdict and its reason, the metrics
and per-turn timing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.cli import main as cli_main
from microturn.scenarios import format as fmt
from microturn.scenarios.format import loads_scenario
from microturn.scenarios.results import result_record
from microturn.scenarios.runner import run_scenario

LIBRARY = Path(fmt.__file__).parent / "library"
TEXT_TURN = LIBRARY / "smooth-turn-text.toml"
BARGE_IN = LIBRARY / "barge-in-early.toml"

SLOW_BUDGET = """
name = "reply-budget"
category = "smooth_turn"
duration = 4.0

[model]
name = "scripted"

[[timeline]]
kind = "say"
at = 0.4
text = "hello there"

[[expect]]
kind = "responds_within"
after = "user:turn_end"
budget_ms = {budget}

[[expect]]
kind = "says"
pattern = "hi there"
"""


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _needs_espeak() -> None:
    from microturn.audio import espeak_available

    if not espeak_available():
        pytest.skip("espeak-ng is not installed")


def test_one_object_per_scenario_with_verdicts_metrics_and_turn_timing(tmp_path: Path) -> None:
    _needs_espeak()
    out = tmp_path / "results.jsonl"
    assert cli_main(["run", str(TEXT_TURN), str(BARGE_IN), "--model", "scripted", "--json", str(out)]) == 0
    records = _lines(out)
    assert [r["name"] for r in records] == ["smooth-turn-text", "barge-in-early"]
    for record, path in zip(records, (TEXT_TURN, BARGE_IN), strict=True):
        result = run_scenario(path, model="scripted")
        assert record["file"] == str(path) and record["model"] == "scripted"
        assert record["category"] == result.scenario.category
        assert record["ok"] is True and record["verdict"] == "pass"
        assert [(e["name"], e["ok"], e["observed"]) for e in record["expectations"]] == [
            (o.name, o.ok, o.observed) for o in result.outcomes
        ]
        assert record["metrics"]["stop_latency_s"] == result.metrics.stop_latency_s
        assert record["metrics"]["response_latency_s"] == result.metrics.response_latency_s
        assert len(record["metrics"]["events"]) == len(result.metrics.events)
    turn = records[0]["turns"]
    assert turn == [{"kind": "turn_end", "time": 0.8, "response_start": 1.2, "latency_s": 0.4, "takeover": True}]
    barge = [t for t in records[1]["turns"] if t["kind"] == "barge_in"]
    assert barge == [{"kind": "barge_in", "time": 2.8, "stop_latency_s": 0.2, "stopped": True}]
    assert [e["kind"] for e in records[1]["expectations"]] == ["stops_within", "does_not_say"]


def test_the_same_run_writes_the_same_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for out in (first, second):
        assert cli_main(["run", str(TEXT_TURN), "--model", "scripted", "--json", str(out)]) == 0
    assert first.read_bytes() == second.read_bytes()


def test_a_failed_expectation_is_in_the_file_with_its_reason(tmp_path: Path) -> None:
    scenario = tmp_path / "reply-budget.toml"
    scenario.write_text(SLOW_BUDGET.format(budget=100))
    out = tmp_path / "results.jsonl"
    assert cli_main(["run", str(scenario), "--json", str(out)]) == 1
    (record,) = _lines(out)
    assert record["ok"] is False and record["verdict"] == "fail"
    failed = record["expectations"][0]
    assert failed["kind"] == "responds_within" and failed["ok"] is False and failed["verdict"] == "fail"
    assert "400 ms after user:turn_end" in failed["observed"] and "budget 100 ms, over" in failed["observed"]
    assert record["expectations"][1]["ok"] is True


def test_a_suite_with_a_broken_file_writes_an_error_object(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "good.toml").write_text(SLOW_BUDGET.format(budget=1000))
    (suite / "broken.toml").write_text('[[expect]]\nkind = "responds_within"\nbudget_ms = -5\n')
    out = tmp_path / "results.jsonl"
    assert cli_main(["run", "--suite", str(suite), "--json", str(out)]) == 2
    records = _lines(out)
    assert [r["verdict"] for r in records] == ["pass", "error"]
    assert records[1]["file"].endswith("broken.toml") and records[1]["ok"] is None
    assert "expect[0].budget_ms" in records[1]["error"] and "-5" in records[1]["error"]


def test_a_json_file_that_cannot_be_written_is_a_usage_error_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no" / "such" / "folder" / "out.jsonl"
    assert cli_main(["run", str(TEXT_TURN), "--model", "scripted", "--json", str(missing)]) == 2
    captured = capsys.readouterr()
    assert f"--json {missing}" in captured.err and "cannot write it" in captured.err
    assert captured.out == ""


@settings(max_examples=12, derandomize=True, deadline=None)
@given(budget=st.integers(min_value=0, max_value=1000))
def test_the_verdict_follows_the_measured_turn_latency(budget: int) -> None:
    """Over many budgets: a responds_within verdict in the file is exactly 'the turn's latency is within it'."""
    scenario = loads_scenario(SLOW_BUDGET.format(budget=budget))
    record = result_record(run_scenario(scenario))
    (turn,) = record["turns"]
    assert record["expectations"][0]["ok"] == (turn["latency_s"] * 1000 <= budget + 1e-6)
    assert record["ok"] == record["expectations"][0]["ok"]
