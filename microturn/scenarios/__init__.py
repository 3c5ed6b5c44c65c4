"""Scenarios for researchers: the format, the virtual-time runner, Full-Duplex-Bench metrics and reports."""

from typing import Any

from .builder import ScenarioBuilder
from .format import Scenario, ScenarioError, load_scenario, loads_scenario, validate
from .outcome import USER_EVENT_MARKS, ExpectationOutcome

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

_RUNNER = {"ScenarioResult", "SuiteResult", "build_actors", "run", "run_scenario", "run_suite"}


def __getattr__(name: str) -> Any:
    # The runner pulls in the actors (numpy, soxr): import it only when it is asked for, so reading a
    # recording's metrics or a scenario file stays light.
    if name in _RUNNER:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'microturn.scenarios' has no attribute {name!r}")
