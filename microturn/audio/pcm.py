"""PCM16 <-> float conversion and validation of raw audio input.

PCM16 here always means signed 16-bit little-endian samples, interleaved when there is more than one channel
(the WAV and WebRTC convention). Float audio is float32 in [-1, 1): int16 / 32768, so PCM16 round-trips
exactly.
"""

from __future__ import annotations

import numpy as np

from microturn.audio.errors import AudioInputError

__all__ = [
    "FLOAT_MAX",
    "MAX_MESSAGE_SECONDS",
    "SUPPORTED_RATES",
    "TARGET_RATE",
    "check_finite",
    "check_rate",
    "clip_to_range",
    "decode_pcm16",
    "float_to_pcm16",
    "pcm16_to_float",
]

#: Sample rates accepted from transports and files (the common telephony, speech and music rates).
SUPPORTED_RATES: tuple[int, ...] = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)

#: The rate everything is converted to before dMel and VAD.
TARGET_RATE = 16000

#: Default cap on one audio message; a transport should send ticks of audio, not whole recordings.
MAX_MESSAGE_SECONDS = 10.0

_PCM16_SCALE = 32768.0

#: The largest float sample: PCM16's largest, so float and PCM16 transports carry the same range.
FLOAT_MAX = 32767 / 32768
_DTYPE_LE_I16 = np.dtype("<i2")


def check_rate(sample_rate: object, field: str = "sample_rate") -> int:
    """Return ``sample_rate`` as an int, or raise AudioInputError if it is not one of SUPPORTED_RATES."""
    # bool is an int subclass; True as a rate is a bug upstream, not 1 Hz.
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise AudioInputError(field, sample_rate, f"must be an int, one of {list(SUPPORTED_RATES)}")
    if int(sample_rate) not in SUPPORTED_RATES:
        raise AudioInputError(field, sample_rate, f"unsupported sample rate; supported: {list(SUPPORTED_RATES)}")
    return int(sample_rate)


def check_finite(samples: np.ndarray, field: str = "samples") -> None:
    """Raise AudioInputError if ``samples`` holds NaN or infinity (naming the first bad index)."""
    if samples.dtype.kind == "f" and samples.size and not np.isfinite(samples).all():
        bad = int(np.flatnonzero(~np.isfinite(samples.ravel()))[0])
        raise AudioInputError(field, f"{samples.ravel()[bad]} at index {bad}", "audio must be finite (no NaN/inf)")


def clip_to_range(samples: np.ndarray) -> tuple[np.ndarray, int]:
    """Finite float samples clipped to [-1, :data:`FLOAT_MAX`] and cast to float32, with how many were out
    of range. The clip comes before the cast, so 1e300 becomes 1.0, not float32 infinity."""
    x = np.asarray(samples)
    out_of_range = int(np.count_nonzero((x < -1.0) | (x > FLOAT_MAX)))
    if out_of_range:
        x = np.clip(x, -1.0, FLOAT_MAX)
    return np.ascontiguousarray(x, dtype=np.float32), out_of_range


def _check_channels(channels: object, field: str = "channels") -> int:
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or not 1 <= int(channels) <= 32:
        raise AudioInputError(field, channels, "must be an int from 1 to 32")
    return int(channels)


def pcm16_to_float(data: bytes | bytearray | memoryview, channels: int = 1, *, field: str = "pcm") -> np.ndarray:
    """Decode PCM16 little-endian bytes to float32 mono in [-1, 1), averaging interleaved channels."""
    channels = _check_channels(channels)
    n = len(data)
    if n % 2:
        raise AudioInputError(field, f"{n} bytes", "PCM16 needs an even number of bytes")
    if (n // 2) % channels:
        raise AudioInputError(
            field, f"{n // 2} samples", f"not a whole number of frames for channels={channels}"
        )
    ints = np.frombuffer(data, dtype=_DTYPE_LE_I16)
    if channels == 1:
        return ints.astype(np.float32) / np.float32(_PCM16_SCALE)
    # Average in float64, then round once to float32: the mean of int16 values is exact enough there.
    frames = ints.reshape(-1, channels).astype(np.float64)
    return (frames.mean(axis=1) / _PCM16_SCALE).astype(np.float32)


def float_to_pcm16(samples: np.ndarray, *, field: str = "samples") -> bytes:
    """Encode float audio (any shape; interleave yourself) to PCM16 little-endian, clipping to [-1, 1)."""
    x = np.asarray(samples)
    if x.dtype.kind in "iu":
        # Integers are taken as PCM16 values already, so callers can pass int16 tracks through.
        return np.clip(x, -32768, 32767).astype(_DTYPE_LE_I16).tobytes()
    if x.dtype.kind != "f":
        raise AudioInputError(field, str(x.dtype), "expected a float or integer array")
    check_finite(x, field)
    scaled = np.rint(x.astype(np.float64) * _PCM16_SCALE)
    return np.clip(scaled, -32768, 32767).astype(_DTYPE_LE_I16).tobytes()


def decode_pcm16(
    data: bytes | bytearray | memoryview,
    sample_rate: int,
    channels: int = 1,
    *,
    max_seconds: float | None = MAX_MESSAGE_SECONDS,
    allow_empty: bool = False,
    field: str = "pcm",
) -> np.ndarray:
    """Validate one PCM16 message and decode it to float32 mono at its own rate.

    Raises AudioInputError for an unsupported rate, a ragged byte count, an empty message (unless
    ``allow_empty``) and a message longer than ``max_seconds`` (None disables the cap).
    """
    sample_rate = check_rate(sample_rate)
    channels = _check_channels(channels)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioInputError(field, type(data).__name__, "expected PCM16 bytes")
    if not len(data) and not allow_empty:
        raise AudioInputError(field, "0 bytes", "empty audio message")
    if max_seconds is not None:
        seconds = len(data) / (2 * channels * sample_rate)
        if seconds > max_seconds:
            raise AudioInputError(
                field, f"{seconds:.3f} s", f"longer than the {max_seconds:g} s allowed in one message"
            )
    return pcm16_to_float(data, channels, field=field)
