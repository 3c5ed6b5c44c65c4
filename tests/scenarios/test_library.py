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


CATEGORIES = {
    "smooth_turn", "pause", "backchannel", "barge_in", "false_barge_in", "self_correction", "background", "tool",
    "time_awareness", "away", "talk_over", "translation", "image", "decline",
}  # fmt: skip
"""The behaviours the library must cover, one category each."""


def test_the_library_covers_the_live_loops_behaviours() -> None:
    scenarios = [load_scenario(p) for p in FILES]
    assert len(scenarios) >= 24
    assert all(s.description and s.expect for s in scenarios)
    categories = {s.category for s in scenarios}
    assert CATEGORIES <= categories, CATEGORIES - categories
    kinds = {e.__struct_config__.tag for s in scenarios for e in s.timeline}
    assert {"say", "interrupt", "pause", "cough", "noise", "image", "mark"} <= kinds
    modes = {(e.mode or s.speech.mode) for s in scenarios for e in s.timeline if isinstance(e, Say)}
    assert modes == {"text", "speech"}


def test_the_library_covers_each_behaviour_in_its_variants() -> None:
    scenarios = [load_scenario(p) for p in FILES]
    by = {c: [s for s in scenarios if s.category == c] for c in CATEGORIES}
    assert len(by["barge_in"]) >= 3  # early, mid and late in the reply
    false_kinds = {type(e).__name__ for s in by["false_barge_in"] for e in s.timeline[1:]}
    assert {"Cough", "Noise", "Say"} <= false_kinds
    pause_tags = {t for s in by["pause"] for t in s.tags}
    assert {"filled-pause", "silent-pause"} <= pause_tags
    deliveries = {b.delivery for s in by["background"] for b in s.background}
    assert {"when_idle", "interrupt"} <= deliveries
    assert any(s.world.background == "offline" for s in by["background"])
    tools = [t for s in by["tool"] for t in s.tools]
    assert any(t.latency_ms >= 2000 for t in tools) and any(t.error for t in tools)
    assert all(s.world.tools == "builtin" for s in by["time_awareness"])  # the real set_timer
    for s in by["decline"]:
        assert {"says", "no_tool_called"} <= {e.__struct_config__.tag for e in s.expect}, s.name
    windowed = {s.category for s in scenarios for e in s.expect if isinstance(e, fmt.Says) and e.start is not None}
    assert {"time_awareness", "translation", "away"} <= windowed


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
async def test_library_scenario_passes(path: Path, autojump_clock) -> None:
    if needs_speech(path) and not espeak_available():
        pytest.skip("espeak-ng is not installed")
    scenario = load_scenario(path)
    result = await run(scenario, model="scripted", path=str(path))
    failures = "\n".join(f"{o.name}: {o.observed}" for o in result.failures)
    if path.stem in KNOWN_FAILURES:
        if result.ok:
            pytest.fail(f"{path.stem} passes now: remove it from KNOWN_FAILURES ({KNOWN_FAILURES[path.stem]})")
        pytest.xfail(KNOWN_FAILURES[path.stem])
    assert result.ok, f"{path.stem}:\n{failures}"
    assert not result.not_fired, result.not_fired
