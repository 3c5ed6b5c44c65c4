"""Voice-activity detection on real espeak-ng speech, silence, white noise, tones and mains hum."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.audio import (
    DMelStream,
    EnergyVAD,
    SileroVAD,
    VADUnavailable,
    VoiceActivityDetector,
    noise,
    silence,
    tone,
)

TICK = 3200


def _ticks(x: np.ndarray) -> list[np.ndarray]:
    return [x[i : i + TICK] for i in range(0, x.size - TICK + 1, TICK)]


def _probs(vad: VoiceActivityDetector, x: np.ndarray) -> np.ndarray:
    vad.reset()
    return np.array([vad.speech_prob(t) for t in _ticks(x)])


def _labels(clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which ticks hold speech (clean RMS > 0.01) and which hold none (< 1e-4), counting each tick's first
    frame's 50 ms of history, which reaches into the previous tick."""
    speech, quiet = [], []
    for i in range(clean.size // TICK):
        seg = clean[max(0, i * TICK - 800) : (i + 1) * TICK]
        rms = float(np.sqrt(np.mean(seg.astype(np.float64) ** 2)))
        speech.append(rms > 0.01)
        quiet.append(rms < 1e-4)
    return np.array(speech), np.array(quiet)


def _hum(seconds: float, f0: float = 50.0, level: float = 0.05) -> np.ndarray:
    """Mains hum: a fundamental and its harmonics (a buzzy sawtooth-like spectrum up to 8 kHz)."""
    t = np.arange(int(seconds * 16000)) / 16000
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, int(7900 / f0)))
    return (level * wave).astype(np.float32)


def test_energy_vad_is_a_voice_activity_detector() -> None:
    assert isinstance(EnergyVAD(), VoiceActivityDetector)


def test_speech_against_silence(utterances: list[np.ndarray]) -> None:
    clean = np.concatenate([silence(1.0)] + [np.concatenate([u, silence(0.8)]) for u in utterances])
    probs = _probs(EnergyVAD(), clean)
    speech, quiet = _labels(clean)
    assert speech.sum() >= 20 and quiet.sum() >= 10
    assert probs[speech].mean() > 0.9
    assert (probs[speech] > 0.5).mean() >= 0.95
    assert probs[quiet].max() < 0.05


@pytest.mark.parametrize("level", [0.003, 0.01])
def test_speech_in_steady_background_noise(utterances: list[np.ndarray], level: float) -> None:
    clean = np.concatenate([silence(1.0)] + [np.concatenate([u, silence(0.8)]) for u in utterances])
    noisy = clean + noise(clean.size / 16000, level, seed=4)
    probs = _probs(EnergyVAD(), noisy)
    speech, quiet = _labels(clean)
    assert probs[speech].mean() > 0.85
    assert (probs[speech] > 0.5).mean() >= 0.9
    assert probs[quiet].max() < 0.5
    assert probs[quiet].mean() < 0.1


def test_speech_over_mains_hum(utterances: list[np.ndarray]) -> None:
    clean = np.concatenate([silence(1.0)] + [np.concatenate([u, silence(0.8)]) for u in utterances])
    probs = _probs(EnergyVAD(), clean + _hum(clean.size / 16000, 60.0, 0.02))
    speech, quiet = _labels(clean)
    assert (probs[speech] > 0.5).mean() >= 0.9
    assert probs[quiet].max() < 0.5


def test_speech_from_the_very_first_tick(utterances: list[np.ndarray]) -> None:
    # No silence to learn a floor from: movement between frames still marks speech.
    probs = _probs(EnergyVAD(), utterances[1])
    speech, _ = _labels(utterances[1])
    assert (probs[speech] > 0.5).mean() >= 0.9


_STEADY = {
    "noise_0.001": lambda: noise(6.0, 0.001, seed=2),
    "noise_0.01": lambda: noise(6.0, 0.01, seed=2),
    "noise_0.2": lambda: noise(6.0, 0.2, seed=2),
    "hum_50": lambda: _hum(6.0, 50.0, 0.1),
    "hum_60": lambda: _hum(6.0, 60.0, 0.1),
    "tone_440": lambda: tone(440.0, 6.0, amplitude=0.3),
    "tone_1000": lambda: tone(1000.0, 6.0, amplitude=0.3),
    "hum_plus_noise": lambda: _hum(6.0, 50.0, 0.05) + noise(6.0, 0.02, seed=9),
}


@pytest.mark.parametrize("name", sorted(_STEADY))
def test_steady_sounds_are_not_speech(name: str) -> None:
    probs = _probs(EnergyVAD(), _STEADY[name]())
    assert probs.max() < 0.3, probs
    assert probs.mean() < 0.05


@pytest.mark.parametrize("background", ["noise", "hum"])
def test_a_new_steady_sound_becomes_background_within_a_tick(background: str) -> None:
    onset = 5  # ticks of silence first
    sound = noise(5.0, 0.05, seed=5) if background == "noise" else _hum(5.0, 50.0, 0.05)
    probs = _probs(EnergyVAD(), np.concatenate([silence(onset * 0.2), sound]))
    assert probs[:onset].max() < 0.01
    # The onset tick itself is ambiguous (a new sound starts); from the next tick on it is background.
    assert probs[onset + 1 :].max() < 0.2, probs


def test_energy_vad_is_deterministic_and_resets(utterances: list[np.ndarray]) -> None:
    x = np.concatenate([silence(0.6), utterances[0], silence(0.6)])
    x = x + noise(x.size / 16000, 0.003, seed=1)
    vad = EnergyVAD()
    first = _probs(vad, x)
    second = _probs(vad, x)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, _probs(EnergyVAD(), x))


def test_shared_spectra_give_the_same_probabilities(utterances: list[np.ndarray]) -> None:
    x = np.concatenate([silence(0.4), utterances[2], silence(0.4)])
    own, shared, stream = EnergyVAD(), EnergyVAD(), DMelStream()
    for t in _ticks(x):
        frames = stream.push_frames(t)
        assert own.speech_prob(t) == shared.speech_prob_from_magnitudes(frames.magnitudes)


def test_a_chunk_shorter_than_a_hop_repeats_the_last_probability() -> None:
    vad = EnergyVAD()
    assert vad.speech_prob(np.zeros(100, np.float32)) == 0.0
    p = vad.speech_prob(noise(0.2, 0.1, seed=3))
    assert vad.speech_prob(np.zeros(10, np.float32)) == p


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), level=st.floats(0.0, 0.9), sizes=st.lists(st.integers(0, 6000), max_size=8))
def test_probability_is_always_in_unit_interval(seed: int, level: float, sizes: list[int]) -> None:
    rng = np.random.default_rng(seed)
    vad = EnergyVAD()
    for n in sizes:
        p = vad.speech_prob(np.clip(rng.standard_normal(n) * level, -1, 0.99).astype(np.float32))
        assert 0.0 <= p <= 1.0


def test_bad_input_is_refused() -> None:
    from microturn.audio import AudioInputError

    with pytest.raises(AudioInputError, match="samples"):
        EnergyVAD().speech_prob(np.array([np.inf], np.float32))
    with pytest.raises(ValueError, match="magnitudes"):
        EnergyVAD().speech_prob_from_magnitudes(np.zeros((4, 10)))


_HAVE_SILERO = importlib.util.find_spec("silero_vad") is not None and importlib.util.find_spec("torch") is not None


@pytest.mark.skipif(_HAVE_SILERO, reason="silero-vad is installed")
def test_silero_without_its_package_says_what_to_install() -> None:
    with pytest.raises(VADUnavailable, match="silero-vad"):
        SileroVAD()


@pytest.mark.skipif(not _HAVE_SILERO, reason="silero-vad is not installed")
def test_silero_separates_speech_from_silence(utterances: list[np.ndarray]) -> None:  # pragma: no cover
    clean = np.concatenate([silence(1.0), utterances[0], silence(1.0)])
    vad = SileroVAD()
    assert isinstance(vad, VoiceActivityDetector)
    probs = _probs(vad, clean)
    speech, quiet = _labels(clean)
    assert probs[speech].mean() > 0.7
    assert probs[quiet].max() < 0.3
