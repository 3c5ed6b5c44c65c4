"""The pytest plugin: scenario TOML files as test items (the ``microturn`` ``pytest11`` entry point).

    pytest microturn/scenarios/library                 # every scenario, one item each
    pytest my/scenarios -k barge -x -n 2 --junitxml=out.xml --microturn-model scripted

**What is collected.** A ``*.toml`` file is a scenario item when both hold:

1. it lies under a path named on the command line, or under a folder of the ``microturn_scenarios`` ini option
   (a list of folders, relative to the rootdir); the ``testpaths`` of a plain ``pytest`` run do not count, so a
   project's own test run never picks up scenario files by accident;
2. it was named itself, or its text has a top-level ``[[timeline]]`` / ``[[expect]]`` table (or a
   ``timeline =`` / ``expect =`` key): ``pyproject.toml`` and other TOML are never collected.

Each scenario is one item named after the scenario, with its category and tags as keywords (``-k barge``,
``-k interruption``). A file that is a scenario but cannot be loaded is a collection error naming the file,
line, key and value. pytest-repeat's ``--count N`` makes N items per scenario (``name[1-N]``...), each a full
run: the verdicts must agree, since a run is a function of its scenario.

**Verdicts.** An item passes when every expectation held, and fails showing the failed expectations and the
timeline around them (1.5 s either side of each; all of it for one with no time, such as a judged criterion).
An item whose only shortfall is a judged expectation that was not judged (no judge configured) is *skipped*
with the reason: not judged is never a pass. ``--microturn-model NAME`` runs every scenario on that backend
(default: each scenario's own model). The verdict is also a junitxml property (``verdict``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ScenarioFile", "ScenarioItem", "looks_like_scenario"]

ROOTS_KEY = "microturn_scenario_roots"
"""The workerinput key by which the main process tells pytest-xdist workers what to collect."""
_roots = pytest.StashKey[list[Path]]()
_SCENARIO_TABLE = re.compile(
    r"^\s*(\[\[\s*(timeline|expect)\s*\]\]|(timeline|expect)\s*=|\[\s*user\s*\])", re.MULTILINE
)
_MAX_PEEK = 1 << 20
WINDOW_S = 1.5
"""Seconds of timeline shown either side of a failed expectation."""
MAX_TIMELINE_LINES = 200


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--microturn-model`` and the ``microturn_scenarios`` ini option."""
    group = parser.getgroup("microturn", "microturn scenarios")
    group.addoption("--microturn-model", metavar="NAME", default=None, dest="microturn_model",
                    help="run every scenario on this interaction backend (scripted, embedded, local:CHECKPOINT...; "
                    "default: each scenario's own model)")
    parser.addini("microturn_scenarios", type="linelist", default=[],
                  help="folders (relative to the rootdir) whose scenario TOML files are collected in every run")


def pytest_configure(config: pytest.Config) -> None:
    """Decide once, in the main process, which paths may hold scenario items; xdist workers are told."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and ROOTS_KEY in workerinput:
        roots = [Path(p) for p in workerinput[ROOTS_KEY]]
    else:
        roots = []
        if config.args_source == pytest.Config.ArgsSource.ARGS:
            base = config.invocation_params.dir
            roots += [(base / arg.split("::", 1)[0]).resolve() for arg in config.args]
        for folder in config.getini("microturn_scenarios"):
            roots.append((config.rootpath / folder).resolve())
    config.stash[_roots] = roots


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: hand a worker the main process's collection roots (a worker sees its args differently)."""
    node.workerinput[ROOTS_KEY] = [str(p) for p in node.config.stash.get(_roots, [])]


def looks_like_scenario(path: Path) -> bool:
    """Whether a TOML file's text has a top-level ``timeline`` or ``expect`` (tables or keys)."""
    try:
        with path.open("rb") as f:
            head = f.read(_MAX_PEEK)
    except OSError:
        return False
    return bool(_SCENARIO_TABLE.search(head.decode("utf-8", errors="replace")))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    """A scenario file under a named path (see the module docstring for the rule)."""
    if file_path.suffix != ".toml":
        return None
    resolved = file_path.resolve()
    roots = parent.config.stash.get(_roots, [])
    if resolved in roots or (any(root in resolved.parents for root in roots) and looks_like_scenario(resolved)):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    """One scenario file: one item (or ``--count`` items, with pytest-repeat)."""

    def collect(self) -> Any:
        """Load the scenario; a bad one is a collection error that names file, line, key and value."""
        # late: pytest loads this plugin in every run, and the format pulls in the actors (numpy, soxr)
        from .format import ScenarioError, load_scenario
        from .simulator import simulated_runs

        try:
            runs = simulated_runs(self.path)
            if runs is not None:  # a simulated user: one item per seeded run, e.g. ``name[seed=3]``
                for run in runs:
                    yield ScenarioItem.from_parent(self, name=run.name, scenario=run, simulated=True)
                return
            scenario = load_scenario(self.path)
        except ScenarioError as exc:
            raise self.CollectError(str(exc)) from None
        count = int(self.config.getoption("count", default=1) or 1)  # pytest-repeat's --count
        if count <= 1:
            yield ScenarioItem.from_parent(self, name=scenario.name, scenario=scenario)
            return
        for i in range(count):
            yield ScenarioItem.from_parent(self, name=f"{scenario.name}[{i + 1}-{count}]", scenario=scenario)


class ScenarioFailed(Exception):
    """A scenario whose expectations did not all hold (carries the result for the report)."""

    def __init__(self, result: Any) -> None:
        super().__init__(result.scenario.name)
        self.result = result


class ScenarioNotRun(Exception):
    """A scenario that could not run (a bad ``--microturn-model``, a missing extra...): the message says why."""


class ScenarioItem(pytest.Item):
    """One run of a scenario in lockstep virtual time."""

    def __init__(self, *, scenario: Any, simulated: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.simulated = simulated
        self.extra_keyword_matches.update({scenario.category, *scenario.tags})

    @property
    def obj(self) -> Any:
        """The test callable: plugins that assume Python items read ``item.obj`` (pytest-trio's trio_mode does,
        for every item); a plain function tells them this is no coroutine to wrap."""
        return self.runtest

    def runtest(self) -> None:
        """Run the scenario; fail with the failed expectations, skip when something was not judged."""
        from microturn.runtime import MicroturnError

        from .runner import run_scenario

        try:
            source = self.scenario if self.simulated else self.path  # a run exists only as its expanded scenario
            result = run_scenario(source, model=self.config.getoption("microturn_model"))
        except MicroturnError as exc:  # ScenarioError included: a clear message, no traceback
            raise ScenarioNotRun(str(exc)) from None
        self.user_properties.append(("verdict", result.verdict))
        self.user_properties.append(("model", result.model))
        if result.verdict == "fail":
            raise ScenarioFailed(result)
        if result.verdict == "not judged":
            names = "; ".join(f"{o.name}: {o.observed}" for o in result.not_judged)
            pytest.skip(f"not judged (not a pass): {names}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """The failed expectations and the timeline around them, or why the scenario could not run."""
        if isinstance(excinfo.value, ScenarioFailed):
            return failure_text(excinfo.value.result)
        if isinstance(excinfo.value, ScenarioNotRun):
            return f"scenario {self.scenario.name} could not run: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        """Where the item comes from, for pytest's report."""
        return self.path, None, f"scenario {self.scenario.name} ({self.scenario.category})"


def _line_time(line: str) -> float | None:
    try:
        return float(line[:8])
    except ValueError:
        return None


def failure_text(result: Any) -> str:
    """A failed scenario: its failed (and not judged) expectations, then the timeline around each failure."""
    from .runner import timeline_lines

    sc = result.scenario
    headline = (f"scenario {sc.name} ({sc.category}) on model {result.model}: {len(result.failures)} of "
                f"{len(result.outcomes)} expectations failed")
    out = [headline]
    for o in result.outcomes:
        if not o.ok:
            out.append(f"  {'FAIL' if o.judged else 'N/J '}  {o.name}: {o.observed}")
    times = [o.time for o in result.failures]
    lines = timeline_lines(result)
    header, rows = lines[0], lines[1:]
    if any(t is None for t in times):
        shown, what = rows, "the timeline"
    else:
        shown = [
            line for line in rows
            if (t := _line_time(line)) is None or any(abs(t - when) <= WINDOW_S + 1e-9 for when in times)  # type: ignore[operator]
        ]
        what = f"the timeline within {WINDOW_S:g} s of each failure"
    if len(shown) > MAX_TIMELINE_LINES:
        shown = [*shown[:MAX_TIMELINE_LINES], f"(… {len(shown) - MAX_TIMELINE_LINES} more lines)"]
    out += ["", f"{what}:", header, *shown]
    return "\n".join(out)
