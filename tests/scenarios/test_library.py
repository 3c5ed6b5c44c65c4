"""The scenario library passes with the scripted policy, in virtual time, and covers the behaviours the
live loop has today."""

from __future__ import annotations

from pathlib import Path

import pytest

from microturn.audio import espeak_available
from microturn.scenarios import format as fmt
from microturn.scenarios.format import Say, load_scenario
from microturn.scenarios.runner import run

LIBRARY = Path(fmt.__file__).parent / "library"
FILES = sorted(LIBRARY.glob("*.toml"))

KNOWN_FAILURES: dict[str, str] = {}
"""Scenarios that fail for a known reason outside the scenario code; strict, so a fix shows up as XPASS."""


def needs_speech(path: Path) -> bool:
    scenario = load_scenario(path)
    return any(
        isinstance(e, Say) and (e.mode or scenario.speech.mode) == "speech" for e in scenario.timeline
    )


def test_the_library_covers_the_live_loops_behaviours() -> None:
    scenarios = [load_scenario(p) for p in FILES]
    assert len(scenarios) >= 8
    categories = {s.category for s in scenarios}
    assert {"smooth_turn", "pause", "backchannel", "barge_in", "false_barge_in", "background", "tool"} <= categories
    kinds = {e.__struct_config__.tag for s in scenarios for e in s.timeline}
    assert {"say", "interrupt", "pause", "cough"} <= kinds
    modes = {(e.mode or s.speech.mode) for s in scenarios for e in s.timeline if isinstance(e, Say)}
    assert modes == {"text", "speech"}
    assert sum(s.category == "barge_in" for s in scenarios) >= 2


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
async def test_library_scenario_passes(path: Path, autojump_clock) -> None:
    if needs_speech(path) and not espeak_available():
        pytest.skip("espeak-ng is not installed")
    scenario = load_scenario(path)
    result = await run(scenario, path=str(path))
    failures = "\n".join(f"{o.name}: {o.observed}" for o in result.failures)
    if path.stem in KNOWN_FAILURES:
        if result.ok:
            pytest.fail(f"{path.stem} passes now: remove it from KNOWN_FAILURES ({KNOWN_FAILURES[path.stem]})")
        pytest.xfail(KNOWN_FAILURES[path.stem])
    assert result.ok, f"{path.stem}:\n{failures}"
    assert not result.not_fired, result.not_fired
