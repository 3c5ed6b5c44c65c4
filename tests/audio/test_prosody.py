"""Speech end at 10 ms resolution on real espeak audio, and the prosody cue on synthetic rising/falling tones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.audio import Synthesizer, espeak_available
from microturn.audio.prosody import final_cue, speech_end

RATE = 16_000
_SETTINGS = settings(max_examples=12, derandomize=True, deadline=None)


def _glide(f_start: float, f_end: float, seconds: float = 0.6, seed: int = 0) -> np.ndarray:
    """A voiced-like tone (fundamental plus harmonics) gliding in pitch, over faint seeded noise."""
    t = np.arange(round(seconds * RATE)) / RATE
    f = np.geomspace(f_start, f_end, t.size)
    phase = 2 * np.pi * np.cumsum(f) / RATE
    tone = sum(0.3 / k * np.sin(k * phase) for k in (1, 2, 3))
    return tone + np.random.default_rng(seed).normal(0, 1e-4, t.size)


@pytest.mark.parametrize(("start", "end", "final"), [(220, 140, True), (140, 220, False), (180, 180, False)])
def test_falling_pitch_is_final_and_level_or_rising_is_not(start: float, end: float, final: bool) -> None:
    pytest.importorskip("librosa")
    cue = final_cue(_glide(start, end), RATE)
    assert cue.with_pitch and cue.final is final


def test_energy_alone_decides_without_pitch(monkeypatch) -> None:
    from microturn.audio import prosody

    monkeypatch.setattr(prosody, "_pitch_slope", lambda tail, rate: None)  # a test double for "no librosa"
    level = _glide(180, 180)
    decaying = level * np.geomspace(1.0, 0.01, level.size)
    assert not final_cue(level, RATE).final and final_cue(decaying, RATE).final


def test_silence_has_no_end_and_bad_input_names_the_field() -> None:
    assert speech_end(np.zeros(3200), RATE) is None
    with pytest.raises(ValueError, match="rate"):
        speech_end(np.zeros(10), 100)
    with pytest.raises(ValueError, match="finite"):
        speech_end(np.array([np.nan]), RATE)


@pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng")
@_SETTINGS
@given(
    st.sampled_from(["en-us", "en-gb", "en-us+f1", "en-gb+m3"]),
    st.integers(140, 200),
    st.sampled_from(["the harbour opens at nine", "please water the ferns", "violins are loud"]),
    st.integers(0, 2**16),
)
def test_speech_end_is_within_50_ms_inside_a_200_ms_chunk(voice: str, wpm: int, text: str, seed: int) -> None:
    speech = Synthesizer().synthesize_float(text, voice=voice, wpm=wpm)
    loud = np.flatnonzero(np.abs(speech) > 1e-3)  # the true end: the last audible sample of the voice
    true_end = (loud[-1] + 1) / RATE
    rng = np.random.default_rng(seed)
    audio = np.concatenate([speech[: loud[-1] + 1], np.zeros(RATE)]) + rng.normal(0, 3e-4, loud[-1] + 1 + RATE)
    chunk = 3200
    last = (loud[-1]) // chunk  # the 200 ms chunk holding the end, which the VAD calls speech
    found = speech_end(audio[last * chunk:(last + 1) * chunk], RATE)
    assert found is not None
    assert abs(last * chunk / RATE + found - true_end) <= 0.05
