"""Scenario results as plain data: one JSON object per scenario, for ``microturn run --json FILE`` (JSON Lines).

Each object holds: ``name``, ``category``, ``tags``, ``file``, ``model``, ``ok`` (every expectation held),
``verdict`` (``pass``, ``fail`` or ``not judged``), ``expectations`` (each with ``name``, ``kind``, ``ok``,
``verdict``, ``time`` and ``observed``, the reason in words), ``metrics`` (the
:class:`~microturn.scenarios.metrics.Metrics` of the session as plain data: the figures and the per-event
details) and ``turns``, the per-turn timing read off those metrics:

- ``{"kind": "turn_end", "time": T, "response_start": S, "latency_s": S - T, "takeover": bool}`` for each end
  of a user turn (user turn end -> the assistant's first word; ``latency_s`` null when it did not take over);
- ``{"kind": "barge_in", "time": T, "stop_latency_s": L, "stopped": bool}`` for each barge-in (how long the
  assistant kept sounding over the user; null when it was not speaking).

A scenario that could not be loaded or run is an object with ``file``, ``ok: null``, ``verdict: "error"`` and
``error``. Everything is a function of the scenario, so the same run writes the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from .expectations import expectation_name
from .runner import ScenarioResult

__all__ = ["dumps", "error_record", "result_record", "turn_timing"]


def turn_timing(metrics: Any) -> list[dict[str, Any]]:
    """Per-turn timing (user turn end -> assistant start, barge-in -> stop) from a session's metrics."""
    if metrics is None:
        return []
    turns: list[dict[str, Any]] = []
    for e in metrics.events:
        if e.kind == "turn_end":
            turns.append({"kind": "turn_end", "time": e.time, "response_start": e.response_start,
                          "latency_s": e.latency, "takeover": e.takeover})
        elif e.kind == "barge_in":
            turns.append({"kind": "barge_in", "time": e.time, "stop_latency_s": e.stop_latency,
                          "stopped": e.stopped})
    return turns


def result_record(result: ScenarioResult) -> dict[str, Any]:
    """One scenario's result as plain data (see the module docstring)."""
    sc = result.scenario
    expectations = []
    for spec, outcome in zip(sc.expect, result.outcomes, strict=True):
        assert outcome.name == expectation_name(spec)
        expectations.append({
            "name": outcome.name,
            "kind": spec.__struct_config__.tag,
            "ok": outcome.ok,
            "verdict": outcome.verdict,
            "time": outcome.time,
            "observed": outcome.observed,
        })
    return {
        "name": sc.name,
        "category": sc.category,
        "tags": list(sc.tags),
        "file": result.path,
        "model": result.model,
        "ok": result.ok,
        "verdict": result.verdict,
        "expectations": expectations,
        "metrics": msgspec.to_builtins(result.metrics) if result.metrics is not None else None,
        "turns": turn_timing(result.metrics),
    }


def error_record(file: str, error: str) -> dict[str, Any]:
    """A scenario that could not be loaded or run, as plain data."""
    return {"file": file, "ok": None, "verdict": "error", "error": error}


def dumps(record: dict[str, Any]) -> str:
    """One JSON line (keys in a fixed order, no NaN: a figure that is not a number is null)."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False)
