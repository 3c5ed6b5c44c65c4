"""Scenarios for researchers: the format, the virtual-time runner, Full-Duplex-Bench metrics and reports."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .builder import ScenarioBuilder
    from .format import Scenario, ScenarioError, load_scenario, loads_scenario, validate
    from .outcome import USER_EVENT_MARKS, ExpectationOutcome
    from .runner import ScenarioResult, SuiteResult, build_actors, run, run_scenario, run_suite

__all__ = [
    "ExpectationOutcome",
    "USER_EVENT_MARKS",
    "Scenario",
    "ScenarioBuilder",
    "ScenarioError",
    "ScenarioResult",
    "SuiteResult",
    "build_actors",
    "load_scenario",
    "loads_scenario",
    "run",
    "run_scenario",
    "run_suite",
    "validate",
]

_FORMAT = {"Scenario", "ScenarioError", "load_scenario", "loads_scenario", "validate"}
_OUTCOME = {"ExpectationOutcome", "USER_EVENT_MARKS"}
_RUNNER = {"ScenarioResult", "SuiteResult", "build_actors", "run", "run_scenario", "run_suite"}


def __getattr__(name: str) -> Any:
    # Everything is imported only when it is asked for: the format pulls in the assembly and the actors (numpy,
    # soxr), and the pytest plugin (``microturn.scenarios.pytest_plugin``, loaded by every pytest run where
    # microturn is installed) must not make each pytest start pay for that.
    module: Any
    if name in _FORMAT:
        from . import format as module
    elif name in _OUTCOME:
        from . import outcome as module  # type: ignore[no-redef]
    elif name in _RUNNER:
        from . import runner as module  # type: ignore[no-redef]
    elif name == "ScenarioBuilder":
        from . import builder as module  # type: ignore[no-redef]
    else:
        raise AttributeError(f"module 'microturn.scenarios' has no attribute {name!r}")
    return getattr(module, name)
