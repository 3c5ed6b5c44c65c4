"""Where speech ends inside a chunk, and whether its last ~300 ms sound final (falling pitch, decaying energy).

A 200 ms chunk that holds the last word counts wholly as speech in the voice-activity detector; ``speech_end``
finds the end at 10 ms frames so a silence clock can start at the true end. ``final_cue`` reads the pitch
contour with librosa's YIN when the ``prosody`` extra is installed, and falls back to energy alone without it.
"""

from __future__ import annotations

import numpy as np

from microturn.log import get_logger

__all__ = ["FRAME_SECONDS", "ProsodyCue", "final_cue", "pitch_available", "speech_end"]

FRAME_SECONDS = 0.01
"""The resolution of ``speech_end``: 10 ms frames."""
_MAX_SAMPLES = 16_000 * 60  # one minute at 16 kHz: a bound on what one call reads
_log = get_logger(__name__)


def _check(samples: np.ndarray, rate: int) -> np.ndarray:
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8_000 <= rate <= 48_000:
        raise ValueError(f"rate must be an int sample rate in 8000..48000 Hz, got {rate!r}")
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.size > _MAX_SAMPLES * rate // 16_000:
        raise ValueError(f"samples must be at most 60 s long, got {x.size / rate:.1f} s")
    if not np.all(np.isfinite(x)):
        raise ValueError("samples must be finite floats in [-1, 1], got NaN or inf")
    return x


def _frame_db(x: np.ndarray, rate: int) -> np.ndarray:
    n = max(1, round(FRAME_SECONDS * rate))
    frames = x[: x.size // n * n].reshape(-1, n)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def speech_end(samples: np.ndarray, rate: int, *, floor_db: float = -50.0) -> float | None:
    """Seconds from the start of ``samples`` to the end of the last 10 ms frame louder than ``floor_db`` dBFS,
    or None when no frame is; a frame is speech when its mean power is above the floor."""
    x = _check(samples, rate)
    loud = np.flatnonzero(_frame_db(x, rate) > floor_db)
    return None if loud.size == 0 else float((loud[-1] + 1) * FRAME_SECONDS)


class ProsodyCue:
    """The cue of an utterance's last stretch: ``final`` (falling pitch and/or decaying energy) or not, with the
    slopes it was judged on (semitones per second; dB per second) and whether pitch was measured at all."""

    __slots__ = ("energy_slope", "final", "pitch_slope", "with_pitch")

    def __init__(self, *, final: bool, pitch_slope: float | None, energy_slope: float) -> None:
        self.final, self.pitch_slope, self.energy_slope = final, pitch_slope, energy_slope
        self.with_pitch = pitch_slope is not None

    def __repr__(self) -> str:
        return f"ProsodyCue(final={self.final}, pitch_slope={self.pitch_slope}, energy_slope={self.energy_slope})"


def pitch_available() -> bool:
    """Whether the pitch tracker (librosa, the ``prosody`` extra) is installed."""
    try:
        import librosa  # noqa: F401  (optional and heavy: imported only to look)
    except ImportError:
        return False
    return True


def _slope(values: np.ndarray) -> float:
    t = np.arange(values.size) * FRAME_SECONDS
    return float(np.polyfit(t, values, 1)[0]) if values.size >= 3 else 0.0


def final_cue(samples: np.ndarray, rate: int, *, window: float = 0.3, floor_db: float = -50.0) -> ProsodyCue:
    """Judge the last ``window`` seconds of speech in ``samples`` (trailing silence dropped): pitch falling by
    more than 2 semitones/s, or (without pitch) energy decaying by more than 20 dB/s, is ``final``; level or
    rising pitch is continuing. Without librosa the energy alone decides, and a log line says so once."""
    x = _check(samples, rate)
    end = speech_end(x, rate, floor_db=floor_db)
    if end is None:
        return ProsodyCue(final=False, pitch_slope=None, energy_slope=0.0)
    tail = x[max(0, round((end - window) * rate)): round(end * rate)]
    db = _frame_db(tail, rate)
    energy_slope = _slope(db)
    pitch_slope = _pitch_slope(tail, rate)
    if pitch_slope is None:
        return ProsodyCue(final=energy_slope < -20.0, pitch_slope=None, energy_slope=energy_slope)
    return ProsodyCue(final=pitch_slope < -2.0, pitch_slope=pitch_slope, energy_slope=energy_slope)


_warned = False


def _pitch_slope(tail: np.ndarray, rate: int) -> float | None:
    global _warned
    try:
        import librosa
    except ImportError:
        if not _warned:
            _warned = True
            _log.info("prosody_energy_only", hint="pip install 'microturn[prosody]' for the pitch tracker")
        return None
    hop = round(FRAME_SECONDS * rate)
    if tail.size < 4 * hop + 2048 // 4:
        return None
    f0 = librosa.yin(tail, fmin=70.0, fmax=400.0, sr=rate, frame_length=1024, hop_length=hop, center=False)
    voiced = f0[(f0 > 70.5) & (f0 < 399.5)]
    if voiced.size < 3:
        return None
    return _slope(12.0 * np.log2(voiced / 100.0))
