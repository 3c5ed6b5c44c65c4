"""Voice-activity detection: one speech probability per 200 ms tick.

The perception actor calls ``speech_prob`` once per tick with that tick's 16 kHz float32 samples (3200 of
them). Detectors keep whatever state they need across calls (a noise floor, a recurrent state, leftover
samples) and ``reset`` at the start of a session.

Two detectors:

- ``EnergyVAD`` (built in, numpy only, deterministic): energy and spectral cues on the same 50 ms / 100 ms
  frames as dMel, so perception can hand it the spectra it already computed.
- ``SileroVAD`` (optional): the learned Silero model, used when the ``silero-vad`` package (and torch) is
  installed.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections import deque
from typing import Protocol, runtime_checkable

import numpy as np

from microturn.audio.dmel import DMEL, DMelParams, DMelStream, hann_window
from microturn.audio.errors import VADUnavailable
from microturn.audio.pcm import TARGET_RATE
from microturn.audio.resample import as_mono_float

__all__ = ["EnergyVAD", "SileroVAD", "VoiceActivityDetector", "silero_available"]


@runtime_checkable
class VoiceActivityDetector(Protocol):
    """Anything that turns consecutive chunks of 16 kHz mono audio into speech probabilities."""

    def reset(self) -> None:
        """Forget all state (start of a new session)."""
        ...

    def speech_prob(self, samples: np.ndarray) -> float:
        """Probability in [0, 1] that the chunk (normally one 200 ms tick, 3200 samples) contains speech."""
        ...


def _sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0))))


class EnergyVAD:
    """A deterministic speech detector from energy and spectral cues, with an adaptive noise floor.

    Per 50 ms frame (100 ms Hann window: the dMel framing) it measures the power in the 300-3400 Hz speech
    band. The noise floor is the minimum of that level over the last ``floor_seconds`` (minimum statistics:
    speech has gaps, so the minimum tracks the background, not the talker), raised at once to the level of
    any sound that has stayed within ``steady_range_db`` for ``steady_seconds`` (a fan switched on, hum),
    never below ``min_floor_db``. One logistic score per chunk then weighs

    - evidence: the rise of the chunk's loudest frame above the floor, and the frame-to-frame movement of the
      band level (syllables modulate energy; noise and hum do not), each step capped at ``max_step_db`` so a
      single onset is not taken for syllables;
    - against: spectral flatness above 0.3 (hiss; white noise is ~0.56, harmonics near 0), a small share of
      energy in the speech band (rumble, mains hum), and a level near digital silence.

    Tuned on espeak-ng speech against silence, white noise, tones and mains hum (tests/audio); the first tick
    after a new steady sound starts can still read as speech. A cheap baseline, not a learned VAD: the class
    attributes below are its tunables (subclass to change them).
    """

    band_hz: tuple[float, float] = (300.0, 3400.0)
    floor_seconds: float = 3.0
    steady_seconds: float = 0.3
    steady_range_db: float = 2.0
    min_floor_db: float = -70.0
    max_step_db: float = 6.0
    silence_db: float = -60.0

    def __init__(self, params: DMelParams = DMEL) -> None:
        if params.sample_rate != TARGET_RATE:
            raise ValueError(f"EnergyVAD expects {TARGET_RATE} Hz framing, got {params.sample_rate}")
        self.params = params
        freqs = np.arange(params.n_bins) * (params.sample_rate / params.n_fft)
        self._band = (freqs >= self.band_hz[0]) & (freqs <= self.band_hz[1])
        self._all = freqs >= 60.0  # below 60 Hz is rumble and mains, never speech
        # Parseval: one-sided power summed over bins / (n_fft * sum(w^2) / 2) is the mean square of the signal.
        self._power_scale = 2.0 / (params.n_fft * float(np.sum(hann_window(params) ** 2)))
        self._floor_len = max(1, round(self.floor_seconds * params.frames_per_second))
        self._steady_len = max(2, round(self.steady_seconds * params.frames_per_second))
        self.reset()

    def reset(self) -> None:
        """Forget the noise floor and the sample history."""
        self._stream = DMelStream(self.params)
        self._levels: deque[float] = deque(maxlen=self._floor_len)
        self._prev_db: float | None = None
        self._last_prob = 0.0
        self.noise_floor_db = self.min_floor_db
        self.last_features: dict[str, float] = {}

    def speech_prob(self, samples: np.ndarray) -> float:
        """Speech probability for the next chunk of 16 kHz float samples (frames of completed hops).

        A chunk too short to complete a hop returns the previous probability.
        """
        return self.speech_prob_from_magnitudes(self._stream.push_magnitudes(samples))

    def _floor(self) -> float:
        levels = list(self._levels)
        floor = min(levels)
        # A sound that stays within a couple of dB for a third of a second is background (a fan switched on,
        # hum), not speech: adopt it as the floor at once instead of waiting for the window to forget.
        recent = levels[-self._steady_len :]
        if len(recent) == self._steady_len and max(recent) - min(recent) <= self.steady_range_db:
            floor = max(floor, min(recent))
        return max(floor, self.min_floor_db)

    def speech_prob_from_magnitudes(self, magnitudes: np.ndarray) -> float:
        """Speech probability from the dMel-framed magnitude spectra of the chunk ([frames, n_bins]).

        Use this instead of ``speech_prob`` (not both) when ``DMelStream.push_frames`` already gave the spectra.
        """
        mags = np.asarray(magnitudes, dtype=np.float64)
        if mags.ndim != 2 or mags.shape[1] != self.params.n_bins:
            raise ValueError(f"magnitudes must have shape [frames, {self.params.n_bins}], got {mags.shape}")
        if mags.shape[0] == 0:
            return self._last_prob
        power = mags * mags * self._power_scale
        band_power = power[:, self._band]
        band = band_power.sum(axis=1)
        total = power[:, self._all].sum(axis=1)
        band_db = 10.0 * np.log10(band + 1e-12)

        deltas = []
        for db in band_db:
            if self._prev_db is not None:
                deltas.append(min(abs(float(db) - self._prev_db), self.max_step_db))
            self._prev_db = float(db)
            self._levels.append(float(db))
        floor = self._floor()
        self.noise_floor_db = floor

        # Spectral flatness (geometric / arithmetic mean of the band's power): ~0.56 for white noise,
        # near 0 for tones and voiced speech.
        flat = np.exp(np.mean(np.log(band_power + 1e-20), axis=1)) / (band_power.mean(axis=1) + 1e-20)
        loud = int(np.argmax(band))
        features = {
            "snr_db": float(band_db.max()) - floor,
            "modulation_db": float(np.mean(deltas)) if deltas else 0.0,
            "flatness": float(flat[loud]),
            "band_ratio": float(band.sum() / (total.sum() + 1e-20)),
            "level_db": float(band_db.max()),
        }
        # Rise above the floor and frame-to-frame movement are the evidence; hiss-like flatness, energy
        # outside the speech band (rumble, hum) and a level near digital silence count against. Peakiness is
        # not rewarded: a steady tone is peaky too. Movement counts only up to the rise above the floor, so
        # the decay after a click is not taken for syllables.
        snr = min(features["snr_db"], 15.0)
        movement = min(features["modulation_db"], max(snr, 0.0))
        z = (
            0.35 * (snr - 6.0)
            + 0.6 * (movement - 3.0)
            - 10.0 * max(0.0, features["flatness"] - 0.3)
            + 2.0 * min(0.0, features["band_ratio"] - 0.4)
            + min(0.0, 0.5 * (features["level_db"] - self.silence_db))
        )
        self.last_features = features
        self._last_prob = _sigmoid(z)
        return self._last_prob


def silero_available() -> bool:
    """Whether the optional ``silero-vad`` package (and torch) can be imported."""
    return importlib.util.find_spec("silero_vad") is not None and importlib.util.find_spec("torch") is not None


class SileroVAD:
    """Adapter for the learned Silero VAD (needs ``pip install silero-vad``, which brings torch).

    Silero scores 512-sample windows at 16 kHz; a tick's 3200 samples give 6 windows with the remainder kept
    for the next call. The chunk's probability is the maximum over its windows, so a short word still counts.
    """

    window = 512

    def __init__(self) -> None:
        if not silero_available():
            raise VADUnavailable(
                "SileroVAD needs the 'vad' extra (silero-vad, torch): pip install 'microturn[vad]'"
            )
        silero = importlib.import_module("silero_vad")
        self._torch = importlib.import_module("torch")
        self._model = silero.load_silero_vad()
        self.reset()

    def reset(self) -> None:
        """Reset the model's recurrent state and drop leftover samples."""
        self._model.reset_states()
        self._pending = np.zeros(0, np.float32)
        self._last_prob = 0.0

    def speech_prob(self, samples: np.ndarray) -> float:
        """Speech probability for the next chunk of 16 kHz float samples."""
        x = np.concatenate([self._pending, as_mono_float(samples)])
        n = x.size // self.window
        probs = []
        with self._torch.no_grad():
            for i in range(n):
                win = self._torch.from_numpy(x[i * self.window : (i + 1) * self.window].copy())
                probs.append(float(self._model(win, TARGET_RATE).item()))
        self._pending = x[n * self.window :].copy()
        if probs:
            self._last_prob = max(probs)
        return self._last_prob
