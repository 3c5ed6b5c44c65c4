"""Deterministic test signals: tones, noise and silence, float32 mono at 16 kHz by default."""

from __future__ import annotations

import numpy as np

from microturn.audio.errors import AudioInputError
from microturn.audio.pcm import TARGET_RATE, check_rate

__all__ = ["noise", "silence", "tone"]


def _n_samples(seconds: float, sample_rate: int) -> int:
    if not np.isfinite(seconds) or seconds < 0:
        raise AudioInputError("seconds", seconds, "must be a finite number >= 0")
    return round(seconds * check_rate(sample_rate))


def tone(
    freq: float, seconds: float, *, amplitude: float = 0.5, sample_rate: int = TARGET_RATE, phase: float = 0.0
) -> np.ndarray:
    """A sine of ``freq`` Hz and peak ``amplitude`` lasting ``seconds``."""
    n = _n_samples(seconds, sample_rate)
    if not 0 < freq < sample_rate / 2:
        raise AudioInputError("freq", freq, f"must lie in (0, {sample_rate / 2:g}) Hz for rate {sample_rate}")
    if not 0 <= amplitude <= 1:
        raise AudioInputError("amplitude", amplitude, "must lie in [0, 1]")
    t = np.arange(n, dtype=np.float64) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def noise(seconds: float, level: float = 0.05, seed: int = 0, *, sample_rate: int = TARGET_RATE) -> np.ndarray:
    """White Gaussian noise with RMS ``level`` (linear, 1.0 = full scale), the same for the same seed.

    Clipped to [-1, 1) so it is valid audio even at high levels.
    """
    n = _n_samples(seconds, sample_rate)
    if not 0 <= level <= 1:
        raise AudioInputError("level", level, "RMS level must lie in [0, 1]")
    x = np.random.default_rng(seed).standard_normal(n) * level
    return np.clip(x, -1.0, 1.0 - 2.0**-15).astype(np.float32)


def silence(seconds: float, *, sample_rate: int = TARGET_RATE) -> np.ndarray:
    """Digital silence (zeros) lasting ``seconds``."""
    return np.zeros(_n_samples(seconds, sample_rate), np.float32)
