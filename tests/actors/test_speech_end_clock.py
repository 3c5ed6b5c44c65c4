"""The silence clock starts at the chunk's speech_end (fractions of a tick), and prosody decides the wait for audio
without words; perception carries the end measured on real espeak audio."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.actors.dialog_state import DialogStateMachine
from microturn.actors.perception import PerceptionActor
from microturn.audio import Synthesizer, espeak_available

_SETTINGS = settings(max_examples=25, derandomize=True, deadline=None)
PERIOD = 0.2


def _speak(machine: DialogStateMachine, ticks: int, text: str = "", end: float | None = None,
           final: bool | None = None) -> None:
    for i in range(ticks):
        last = i == ticks - 1
        machine.step(1.0, text if i == 0 else "", end if last else None, final if last else None)


def _yield_tick(machine: DialogStateMachine, end: float | None = None, final: bool | None = None) -> int:
    """Silent ticks (the first one carrying ``end``/``final``) until the user is yielding."""
    for k in range(1, 40):
        machine.step(0.0, "", end if k == 1 else None, final if k == 1 else None)
        if machine.user == "yielding":
            return k
    raise AssertionError("never yielded")


@_SETTINGS
@given(st.integers(0, 19), st.integers(3, 8))
def test_the_clock_starts_at_an_end_inside_the_first_silent_tick(frames: int, run: int) -> None:
    end = frames * 0.01  # speech ran this far into the tick the VAD calls silent
    machine = DialogStateMachine()
    _speak(machine, run)
    got = _yield_tick(machine, end=end)
    wait = machine.timings.end_of_turn * PERIOD
    assert got == min(k for k in range(1, 40) if k * PERIOD - end >= wait - 1e-9)
    assert got * PERIOD - end >= wait - 1e-9  # never before the silence really lasted end_of_turn


@_SETTINGS
@given(st.integers(1, 19), st.integers(3, 8))
def test_silence_at_the_end_of_the_last_speech_tick_counts(frames: int, run: int) -> None:
    end = frames * 0.01
    machine = DialogStateMachine()
    _speak(machine, run, end=end)  # the last speech tick ends in silence after ``end``
    got = _yield_tick(machine)
    wait = machine.timings.end_of_turn * PERIOD
    assert got == math.ceil((wait - (PERIOD - end)) / PERIOD - 1e-9)


@pytest.mark.parametrize(("final", "expected"), [(True, 2), (None, 2), (False, 5)])
def test_prosody_decides_the_wait_for_audio_without_words(final: bool | None, expected: int) -> None:
    machine = DialogStateMachine()
    _speak(machine, 4, end=PERIOD, final=final)  # an end exactly at the tick's end adds no silence
    assert _yield_tick(machine) == expected


@_SETTINGS
@given(st.sampled_from(["could you remind me to", "i was going to the", "well, um", "let me think"]), st.booleans())
def test_words_outweigh_prosody(text: str, final: bool) -> None:
    machine = DialogStateMachine()
    _speak(machine, 4, text=text, end=PERIOD, final=final)
    machine.step(0.0)
    assert machine.user == "thinking"  # a falling pitch does not finish an unfinished sentence


def test_a_new_stretch_forgets_the_last_ones_prosody() -> None:
    machine = DialogStateMachine()
    _speak(machine, 4, end=PERIOD, final=True)
    _yield_tick(machine)
    _speak(machine, 4)  # no end measured this time (say the audio stopped on a tick boundary)
    assert _yield_tick(machine) == machine.timings.end_of_turn


@pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng")
@settings(max_examples=8, derandomize=True, deadline=None)
@given(
    st.sampled_from(["en-us", "en-gb", "en-us+f1", "en-gb+m3"]),
    st.integers(140, 200),
    st.sampled_from(["the lantern swung by the door", "seven owls flew home", "bring the copper kettle"]),
    st.integers(0, 2**16),
    st.integers(0, 3199),
)
def test_perception_carries_the_speech_end_within_50_ms(voice: str, wpm: int, text: str, seed: int,
                                                          lead: int) -> None:
    speech = Synthesizer().synthesize_float(text, voice=voice, wpm=wpm)
    loud = np.flatnonzero(np.abs(speech) > 1e-3)
    rng = np.random.default_rng(seed)
    voiced = np.concatenate([np.zeros(lead), speech[: loud[-1] + 1], np.zeros(16_000)])
    audio = (voiced + rng.normal(0, 3e-4, voiced.size)).astype(np.float32)
    true_end = (lead + loud[-1] + 1) / 16_000
    perception = PerceptionActor()
    assert perception.push_samples(audio, 16_000)
    chunks = [perception.close_window(tick) for tick in range(audio.size // 3200)]
    ends = [c.tick * PERIOD + c.speech_end for c in chunks if c.speech_end is not None]
    if not ends:  # sound to a window's last 10 ms frame: the end is that window's end, and no chunk says more
        assert abs(true_end / PERIOD - round(true_end / PERIOD)) * PERIOD <= 0.011
        return
    assert abs(ends[-1] - true_end) <= 0.05
    last = next(c for c in reversed(chunks) if c.speech_end is not None)
    assert isinstance(last.speech_final, bool)
