"""Sample-rate conversion to 16 kHz with soxr, one-shot and streaming.

soxr's streaming resampler gives the same samples whatever the chunking (tested), so a transport may deliver
audio in any message sizes and perception still sees one continuous stream.
"""

from __future__ import annotations

import numpy as np
import soxr

from microturn.audio.errors import AudioInputError
from microturn.audio.pcm import (
    MAX_MESSAGE_SECONDS,
    TARGET_RATE,
    check_finite,
    check_rate,
    decode_pcm16,
)

__all__ = ["StreamResampler", "as_mono_float", "check_mono_float", "pcm16_to_16k", "resample"]

# "HQ" is soxr's default: 20-bit precision, far beyond what 16-level dMel can see, at a small cost.
_QUALITY = "HQ"


def as_mono_float(samples: np.ndarray, *, field: str = "samples") -> np.ndarray:
    """Check a float mono signal (1-D, finite, within float32's range) and return it as contiguous float32."""
    x = check_mono_float(samples, field=field)
    with np.errstate(over="ignore"):  # an overflow is reported below, as bad input, not as a warning
        out = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype != np.float32 and not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out))[0])
        raise AudioInputError(field, f"{x[bad]} at index {bad}", "beyond float32's range (audio is in [-1, 1))")
    return out


def check_mono_float(samples: object, *, field: str = "samples") -> np.ndarray:
    """``samples`` as a 1-D float array (any float width) of finite values, else AudioInputError."""
    try:
        x = np.asarray(samples)
    except (ValueError, TypeError) as exc:  # a ragged list, an object numpy cannot make an array of
        raise AudioInputError(field, type(samples).__name__, f"not an array of samples ({exc})") from None
    if x.ndim != 1:
        raise AudioInputError(field, f"shape {x.shape}", "expected a 1-D mono signal")
    if x.dtype.kind != "f":
        raise AudioInputError(field, str(x.dtype), "expected float samples in [-1, 1)")
    check_finite(x, field)
    return x


def resample(samples: np.ndarray, rate_in: int, rate_out: int = TARGET_RATE) -> np.ndarray:
    """Resample a whole float mono signal from ``rate_in`` to ``rate_out`` (both in SUPPORTED_RATES)."""
    rate_in = check_rate(rate_in, "rate_in")
    rate_out = check_rate(rate_out, "rate_out")
    x = as_mono_float(samples)
    if rate_in == rate_out or not x.size:
        return x.copy()
    return np.asarray(soxr.resample(x, rate_in, rate_out, quality=_QUALITY), dtype=np.float32)


def pcm16_to_16k(
    data: bytes, sample_rate: int, channels: int = 1, *, max_seconds: float | None = MAX_MESSAGE_SECONDS
) -> np.ndarray:
    """Validate and decode one PCM16 message (any supported rate, any channel count) to float32 mono 16 kHz."""
    return resample(decode_pcm16(data, sample_rate, channels, max_seconds=max_seconds), sample_rate)


class StreamResampler:
    """Resample a float mono stream chunk by chunk, keeping filter state across chunks.

    ``push`` returns what is ready so far (soxr holds back a short filter delay); ``flush`` returns the rest at
    the end of the stream. The concatenated output equals ``resample`` of the whole signal.
    """

    def __init__(self, rate_in: int, rate_out: int = TARGET_RATE) -> None:
        self.rate_in = check_rate(rate_in, "rate_in")
        self.rate_out = check_rate(rate_out, "rate_out")
        self._stream: soxr.ResampleStream | None = None
        self.reset()

    def reset(self) -> None:
        """Forget all state, as if no audio had been pushed."""
        if self.rate_in != self.rate_out:
            self._stream = soxr.ResampleStream(self.rate_in, self.rate_out, 1, dtype="float32", quality=_QUALITY)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed the next chunk (float mono at ``rate_in``); return the float32 output that is ready."""
        x = as_mono_float(samples)
        if self._stream is None:
            return x.copy()
        return np.asarray(self._stream.resample_chunk(x), dtype=np.float32)

    def push_pcm16(
        self, data: bytes, channels: int = 1, *, max_seconds: float | None = MAX_MESSAGE_SECONDS
    ) -> np.ndarray:
        """Validate and decode one PCM16 message at ``rate_in`` (channels averaged), then ``push`` it."""
        return self.push(decode_pcm16(data, self.rate_in, channels, max_seconds=max_seconds))

    def flush(self) -> np.ndarray:
        """End the stream: return the samples still held in the filter, then start afresh."""
        if self._stream is None:
            return np.zeros(0, np.float32)
        out = np.asarray(self._stream.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32)
        self.reset()
        return out
