"""Simulated users: the offline simulator's runs are a function of the seed, record byte-identical twice,
replay bit-exact, vary their timing with the seed, and a bad [user] field is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.runtime import read_recording, replay, run_lockstep
from microturn.scenarios.format import Say, ScenarioError
from microturn.scenarios.judge import JUDGE_ENV
from microturn.scenarios.runner import run_scenario
from microturn.scenarios.simulator import (
    MAX_RUNS,
    SIMULATOR_ENV,
    ChatSimulator,
    OfflineSimulator,
    UserConfig,
    expand,
    intent_of,
    load_simulated,
    simulated_runs,
    simulator_from_env,
)

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "simulated"
PERSONAS = sorted(EXAMPLES.glob("*.toml"))


def test_three_example_personas_with_five_runs_each() -> None:
    assert [p.stem for p in PERSONAS] == ["book-a-table", "kitchen-timer", "quick-fact"]
    for path in PERSONAS:
        runs = load_simulated(path)
        assert len(runs) == 5
        assert len({r.name for r in runs}) == 5 and all("[seed=" in r.name for r in runs)


@pytest.mark.parametrize("path", PERSONAS, ids=lambda p: p.stem)
def test_each_run_records_byte_identical_twice_and_replays_bit_exact(path: Path, tmp_path: Path) -> None:
    for k, scenario in enumerate(load_simulated(path)):
        first, second = tmp_path / f"{k}a.mtr", tmp_path / f"{k}b.mtr"
        run_scenario(scenario, model="scripted", record=first, judge=None)
        run_scenario(scenario, model="scripted", record=second, judge=None)
        assert first.read_bytes() == second.read_bytes(), scenario.name
        rec = read_recording(first)
        replayed = run_lockstep(lambda rec=rec: replay(rec))
        assert replayed.ok, (scenario.name, replayed.divergence)


def _timing(events: list) -> list:
    return [(e.at, e.delay_ms, getattr(e, "duration", None)) for e in events]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), goal=st.sampled_from(["book a table", "set a timer", "what is 3 plus 4", "a fact"]))
def test_the_plan_is_a_function_of_the_seed_and_other_seeds_time_it_differently(seed: int, goal: str) -> None:
    user = UserConfig(goal=goal, barge_in=0.3, backchannel=0.3, pause_mid_thought=0.3)
    sim = OfflineSimulator()
    plan = sim.plan(user, seed)
    assert plan == sim.plan(user, seed)
    assert _timing(plan) != _timing(sim.plan(user, seed + 1))
    turns = [e for e in plan if isinstance(e, Say) and e.role == "turn"]
    assert 1 <= len(turns) <= user.max_turns


def test_goal_words_pick_the_intent() -> None:
    assert intent_of("Book a table for two") == "book_table"
    assert intent_of("set a TIMER") == "timer"
    assert intent_of("calculate my bill") == "calculate"
    assert intent_of("who wrote hamlet") == "fact"


@pytest.mark.parametrize(
    ("user", "key", "shown"),
    [
        ({"goal": "x", "barge_in": 1.5}, "user.barge_in", "1.5"),
        ({"goal": "x", "backchannel": -0.1}, "user.backchannel", "-0.1"),
        ({"goal": "x", "pause_mid_thought": "often"}, "user.pause_mid_thought", "often"),
        ({"goal": "x", "runs": MAX_RUNS + 1}, "user.runs", str(MAX_RUNS + 1)),
        ({"goal": "x", "max_turns": 0}, "user.max_turns", "0"),
        ({"goal": "x", "mode": "telepathy"}, "user.mode", "telepathy"),
        ({"persona": "no goal"}, "user", "goal"),
        ({"goal": "x", "bogus": 1}, "user", "bogus"),
    ],
)
def test_bad_user_fields_are_clear_errors(user: dict, key: str, shown: str) -> None:
    with pytest.raises(ScenarioError) as err:
        expand({"user": user}, file="s.toml")
    assert err.value.key == key and shown in str(err.value) and "s.toml" in str(err.value)


def test_a_file_without_a_user_table_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text('name = "s"\n')
    with pytest.raises(ScenarioError, match=r"\[user\] table"):
        load_simulated(tmp_path / "s.toml")


def test_success_becomes_a_judged_expectation_and_runs_count_from_the_seed() -> None:
    runs = expand({"name": "n", "user": {"goal": "set a timer", "success": "a timer is set", "runs": 3, "seed": 9}})
    assert [r.name for r in runs] == ["n[seed=9]", "n[seed=10]", "n[seed=11]"]
    assert all(r.expect[-1].criterion == "a timer is set" for r in runs)


def test_run_reports_each_run_and_the_goal_success_rate_and_records_one_file_per_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from microturn.cli import main as cli_main

    _no_models(monkeypatch)
    record, out = tmp_path / "s.mtr", tmp_path / "r.jsonl"
    status = cli_main(["run", str(EXAMPLES / "kitchen-timer.toml"), "--model", "scripted", "--record", str(record),
                       "--json", str(out)])
    assert status == 4  # the success criterion is judged, and no judge is configured: not a pass
    printed = capsys.readouterr().out
    assert "simulated user kitchen-timer: 5 runs, goal reached in 100%" in printed
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["name"] for r in lines[:5]] == [f"kitchen-timer[seed={s}]" for s in range(100, 105)]
    summary = lines[-1]
    assert summary["kind"] == "simulated" and summary["goal_success_rate"] == 1.0 and len(summary["runs"]) == 5
    for seed in range(100, 105):
        assert cli_main(["replay", str(tmp_path / f"s.seed-{seed}.mtr")]) == 0
    assert not record.exists()


def test_the_pytest_plugin_collects_one_item_per_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_models(monkeypatch)
    import importlib.metadata

    installed = any(ep.value == "microturn.scenarios.pytest_plugin"
                    for ep in importlib.metadata.entry_points(group="pytest11"))
    plugin = ["-p", "no:randomly", *([] if installed else ["-p", "microturn.scenarios.pytest_plugin"])]
    result = pytester.runpytest(*plugin, str(EXAMPLES / "quick-fact.toml"), "--co", "-q")
    items = [line.split("::")[1] for line in result.outlines if ".toml::" in line]
    assert items == [f"quick-fact[seed={s}]" for s in range(7, 12)]


def _no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """No judge, reasoner or simulator model configured, whatever the machine's environment says."""
    for names in (*JUDGE_ENV.values(), *SIMULATOR_ENV.values()):
        for name in names:
            monkeypatch.delenv(name, raising=False)


def test_the_llm_simulator_writes_the_lines_over_loopback_and_replay_needs_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_judged import JudgeServerDouble  # the judge tests' OpenAI-compatible server double

    _no_models(monkeypatch)
    lines = ["hi, I need a timer", "twelve minutes please", "thanks, bye"]
    record = tmp_path / "llm.mtr"
    with JudgeServerDouble(answer=json.dumps(lines)) as server:
        monkeypatch.setenv("MICROTURN_SIMULATOR_URL", server.url)
        monkeypatch.setenv("MICROTURN_SIMULATOR_MODEL", "user-double")
        sim = simulator_from_env()
        assert isinstance(sim, ChatSimulator)
        (scenario,) = simulated_runs(EXAMPLES / "kitchen-timer.toml", simulator=sim)[:1]
        asked = list(server.requests)
    assert len(asked) == 5 and asked[0][0]["model"] == "user-double"  # one question per run, before any runs
    assert "impatient cook" in asked[0][0]["messages"][-1]["content"]
    said = [e.text for e in scenario.timeline if isinstance(e, Say) and e.role in ("turn", "partial")]
    assert " ".join(said).split() == " ".join(lines).split()
    # the server is gone: the run and its replay need only the recording
    result = run_scenario(scenario, model="scripted", record=record, judge=None)
    assert not result.not_fired
    rec = read_recording(record)
    assert "twelve minutes please" in repr(rec.messages)
    replayed = run_lockstep(lambda: replay(rec))
    assert replayed.ok, replayed.divergence


def test_an_llm_answer_that_is_no_list_of_lines_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_judged import JudgeServerDouble

    with JudgeServerDouble(answer="I would rather not") as server:
        sim = ChatSimulator.from_env({"MICROTURN_SIMULATOR_URL": server.url})
        with pytest.raises(ScenarioError, match="not a JSON list of lines"):
            sim.plan(UserConfig(goal="set a timer"), 0)
