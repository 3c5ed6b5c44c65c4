"""The pytest plugin: scenario files as test items, run by pytest's own ``pytester``.

Each test runs an inner pytest on a folder of scenario files and checks what a Python user expects of it:
collection (only scenario files, only on paths named), ``-k``, ``-x``, ``--lf``, ``-n`` (pytest-xdist),
``--count`` (pytest-repeat), ``--junitxml``, and a failing item's report."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from microturn.scenarios import format as fmt
from microturn.scenarios.judge import JUDGE_ENV

pytest_plugins = ["pytester"]

LIBRARY = Path(fmt.__file__).parent / "library"


def _plugin_args() -> list[str]:
    """Load the plugin by module unless its entry point is installed (then pytest loads it already; naming it
    twice would register it twice). pytest-randomly is kept out so the inner runs keep file order."""
    installed = any(ep.value == "microturn.scenarios.pytest_plugin"
                    for ep in importlib.metadata.entry_points(group="pytest11"))
    return ["-p", "no:randomly", *([] if installed else ["-p", "microturn.scenarios.pytest_plugin"])]


PLUGIN = _plugin_args()

REPLY = """
name = "{name}"
category = "smooth_turn"
tags = ["text"]
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
"""


def _write(folder: Path, name: str, budget: int) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(REPLY.format(name=name, budget=budget))
    return path


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    """Two scenarios that pass (the reply comes 400 ms after the turn) and two that fail (budget 100 ms)."""
    folder = pytester.path / "scenarios"
    folder.mkdir()
    _write(folder, "reply-fast-ok", 1000)
    _write(folder, "reply-slow-fails", 100)
    _write(folder, "reply-ok-too", 500)
    _write(folder, "reply-too-strict", 0)
    return folder


def _junit(path: Path) -> dict[str, str]:
    """Each testcase's name and outcome (pass, failure, error, skipped) from a junitxml file."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        out[case.get("name")] = kinds[0] if kinds else "pass"
    return out


def test_the_library_is_29_items_and_k_selects_the_barge_ins(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*PLUGIN, str(LIBRARY), "--co", "-q")
    items = [line for line in result.outlines if ".toml::" in line]
    assert len(items) == 29 and len({i.split("::")[1] for i in items}) == 29
    assert result.ret == 0
    barge = pytester.runpytest(*PLUGIN, str(LIBRARY), "--co", "-q", "-k", "barge")
    names = sorted(line.split("::")[1] for line in barge.outlines if ".toml::" in line)
    assert names == ["barge-in-early", "barge-in-late", "barge-in-mid", "false-barge-in-cough",
                     "false-barge-in-noise", "false-barge-in-yeah"]
    by_tag = pytester.runpytest(*PLUGIN, str(LIBRARY), "--co", "-q", "-k", "interruption")  # a tag is a keyword
    assert {line.split("::")[1] for line in by_tag.outlines if ".toml::" in line} >= {"barge-in-early"}


def test_verdicts_and_a_failing_items_report(pytester: pytest.Pytester, suite: Path) -> None:
    result = pytester.runpytest(*PLUGIN, str(suite), "-q")
    result.assert_outcomes(passed=2, failed=2)
    text = result.stdout.str()
    assert "scenario reply-slow-fails (smooth_turn) on model scripted: 1 of 1 expectations failed" in text
    assert ("FAIL  responds within 100 ms after user:turn_end: assistant started speaking 400 ms after "
            "user:turn_end at 0.800 s (budget 100 ms, over)") in text
    assert "the timeline within 1.5 s of each failure:" in text
    assert "   0.800  mark       user:turn_end" in text and '   1.200  assistant  "Hi there!' in text
    assert "Traceback" not in text and "runner.py" not in text


def test_x_stops_at_the_first_failure_and_lf_reruns_only_the_failures(pytester: pytest.Pytester, suite: Path) -> None:
    stopped = pytester.runpytest(*PLUGIN, str(suite), "-q", "-x")  # files in name order: ok, ok-too, slow-fails...
    stopped.assert_outcomes(passed=2, failed=1)
    pytester.runpytest(*PLUGIN, str(suite), "-q").assert_outcomes(passed=2, failed=2)
    again = pytester.runpytest(*PLUGIN, str(suite), "-q", "--lf", "-rA")
    again.assert_outcomes(failed=2)  # the passing files are not even collected
    assert "FAILED scenarios/reply-slow-fails.toml::reply-slow-fails" in again.stdout.str()
    assert "FAILED scenarios/reply-too-strict.toml::reply-too-strict" in again.stdout.str()


def test_junitxml_is_written_with_each_verdict(pytester: pytest.Pytester, suite: Path) -> None:
    out = pytester.path / "results.xml"
    pytester.runpytest(*PLUGIN, str(suite), "-q", f"--junitxml={out}").assert_outcomes(passed=2, failed=2)
    assert _junit(out) == {"reply-fast-ok": "pass", "reply-slow-fails": "failure", "reply-ok-too": "pass",
                           "reply-too-strict": "failure"}
    case = next(c for c in ET.parse(out).getroot().iter("testcase") if c.get("name") == "reply-slow-fails")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties == {"verdict": "fail", "model": "scripted"}
    assert "budget 100 ms, over" in case.find("failure").text  # type: ignore[union-attr]


def test_two_xdist_workers_give_the_same_verdicts(pytester: pytest.Pytester, suite: Path) -> None:
    pytest.importorskip("xdist")
    serial, parallel = pytester.path / "serial.xml", pytester.path / "parallel.xml"
    pytester.runpytest(*PLUGIN, str(suite), f"--junitxml={serial}").assert_outcomes(passed=2, failed=2)
    result = pytester.runpytest_subprocess(*PLUGIN, str(suite), "-n", "2", f"--junitxml={parallel}")
    result.assert_outcomes(passed=2, failed=2)
    assert "2 workers [4 items]" in result.stdout.str()
    assert _junit(parallel) == _junit(serial)


def test_pytest_repeat_count_runs_each_scenario_n_times(pytester: pytest.Pytester, suite: Path) -> None:
    pytest.importorskip("pytest_repeat")
    result = pytester.runpytest(*PLUGIN, str(suite / "reply-fast-ok.toml"), str(suite / "reply-slow-fails.toml"),
                                "--count", "3", "-q", "-rA")
    result.assert_outcomes(passed=3, failed=3)
    text = result.stdout.str()
    for i in (1, 2, 3):
        assert f"PASSED scenarios/reply-fast-ok.toml::reply-fast-ok[{i}-3]" in text
        assert f"FAILED scenarios/reply-slow-fails.toml::reply-slow-fails[{i}-3]" in text


def test_only_scenario_files_on_named_paths_are_collected(pytester: pytest.Pytester, suite: Path) -> None:
    (suite / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.ruff]\nline-length = 120\n')
    (suite / "settings.toml").write_text('title = "not a scenario"\n[owner]\nexpectations = 3\n')
    result = pytester.runpytest(*PLUGIN, str(pytester.path), "--co", "-q")
    items = sorted(line for line in result.outlines if "::" in line)
    assert len(items) == 4 and not any("pyproject" in i or "settings" in i for i in items)
    # a file named on the command line is a scenario whatever it holds (here: one with no expectations)
    (suite / "bare.toml").write_text('name = "bare"\nduration = 1.0\n')
    named = pytester.runpytest(*PLUGIN, str(suite / "bare.toml"), "--co", "-q")
    assert "bare.toml::bare" in named.stdout.str()


def test_a_plain_run_over_testpaths_does_not_collect_scenarios(pytester: pytest.Pytester, suite: Path) -> None:
    pytester.makeini("[pytest]\ntestpaths = scenarios\n")
    pytester.makepyfile(test_other="def test_one():\n    pass\n")
    plain = pytester.runpytest(*PLUGIN, "--co", "-q")
    assert not any(".toml::" in line for line in plain.outlines)
    # the ini option opts a folder in for every run
    pytester.makeini("[pytest]\ntestpaths = scenarios\nmicroturn_scenarios = scenarios\n")
    opted = pytester.runpytest(*PLUGIN, "--co", "-q")
    assert sum(".toml::" in line for line in opted.outlines) == 4


def test_a_broken_scenario_is_a_collection_error_naming_the_key(pytester: pytest.Pytester, suite: Path) -> None:
    (suite / "broken.toml").write_text('[[expect]]\nkind = "responds_within"\nbudget_ms = -5\n')
    result = pytester.runpytest(*PLUGIN, str(suite), "-q")
    result.assert_outcomes(errors=1)  # pytest stops before running anything, as for a broken test module
    text = result.stdout.str()
    assert "ERROR collecting scenarios/broken.toml" in text
    assert "broken.toml:3: expect[0].budget_ms = -5: Expected `float` >= 0.0" in text
    assert "Traceback" not in text
    going_on = pytester.runpytest(*PLUGIN, str(suite), "-q", "--continue-on-collection-errors")
    going_on.assert_outcomes(passed=2, failed=2, errors=1)


def test_model_option_and_a_bad_model_says_why(pytester: pytest.Pytester, suite: Path) -> None:
    result = pytester.runpytest(*PLUGIN, str(suite / "reply-fast-ok.toml"), "--microturn-model", "no-such-model")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "scenario reply-fast-ok could not run: --model = 'no-such-model': unknown model" in text
    assert "Traceback" not in text
    fine = pytester.runpytest(*PLUGIN, str(suite / "reply-fast-ok.toml"), "--microturn-model", "scripted")
    fine.assert_outcomes(passed=1)


def test_a_criterion_without_a_judge_is_skipped_not_passed(
    pytester: pytest.Pytester, suite: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for names in JUDGE_ENV.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    judged = suite / "judged.toml"
    shutil.copy(suite / "reply-fast-ok.toml", judged)
    with judged.open("a") as f:
        f.write('\n[[expect]]\nkind = "judged"\ncriterion = "the assistant greets the user"\n')
    judged.write_text(judged.read_text().replace('name = "reply-fast-ok"', 'name = "judged"'))
    result = pytester.runpytest(*PLUGIN, str(judged), "-rs")
    result.assert_outcomes(skipped=1)
    assert "not judged (not a pass)" in result.stdout.str() and "no judge is configured" in result.stdout.str()


def test_the_declared_entry_point_loads_the_plugin(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyproject's ``pytest11`` entry point, installed as packaging would (a dist-info on the path), makes a plain
    ``pytest FOLDER`` collect scenarios with no ``-p``."""
    import tomllib

    pyproject = tomllib.loads((Path(fmt.__file__).parents[2] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["pytest11"]
    assert declared == {"microturn": "microturn.scenarios.pytest_plugin"}
    site = pytester.path / "site"
    dist = site / "microturn_entry_point_check-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: microturn-entry-point-check\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items()))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess("-p", "no:randomly", str(LIBRARY), "--co", "-q")
    assert sum(".toml::" in line for line in result.outlines) == 29
