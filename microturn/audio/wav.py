"""WAV files (16-bit PCM) through the stdlib ``wave`` module: read, write mono, write a two-track stereo file."""

from __future__ import annotations

import os
import wave
from typing import NamedTuple

import numpy as np

from microturn.audio.errors import AudioInputError, WavFormatError
from microturn.audio.pcm import check_rate, float_to_pcm16

__all__ = ["WavAudio", "read_wav", "write_stereo_wav", "write_wav"]

PathLike = str | os.PathLike[str]
Track = np.ndarray | bytes | bytearray


class WavAudio(NamedTuple):
    """The contents of a PCM16 WAV file: interleaved little-endian samples, rate and channel count."""

    pcm: bytes
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return len(self.pcm) / (2 * self.channels * self.sample_rate)


def read_wav(path: PathLike) -> WavAudio:
    """Read a 16-bit PCM WAV file; raise WavFormatError naming the path if it is missing, corrupt or not PCM16."""
    try:
        with wave.open(os.fspath(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            n = w.getnframes()
            pcm = w.readframes(n)
    except FileNotFoundError as exc:
        raise WavFormatError(path, "no such file") from exc
    except (wave.Error, EOFError, ValueError) as exc:
        # `wave` refuses non-PCM formats (float, A-law, ...) and malformed headers with wave.Error.
        raise WavFormatError(path, f"not a readable PCM WAV file ({exc})") from exc
    if width != 2:
        raise WavFormatError(path, f"{8 * width}-bit samples; only 16-bit PCM is supported")
    if len(pcm) < n * 2 * channels:
        raise WavFormatError(path, f"truncated: header says {n} frames, file holds {len(pcm) // (2 * channels)}")
    return WavAudio(pcm, rate, channels)


def _pcm16(track: Track, field: str) -> np.ndarray:
    if isinstance(track, (bytes, bytearray)):
        if len(track) % 2:
            raise AudioInputError(field, f"{len(track)} bytes", "PCM16 needs an even number of bytes")
        return np.frombuffer(track, dtype="<i2")
    x = np.asarray(track)
    if x.ndim != 1:
        raise AudioInputError(field, f"shape {x.shape}", "expected a 1-D mono track")
    return np.frombuffer(float_to_pcm16(x, field=field), dtype="<i2")


def _write(path: PathLike, interleaved: np.ndarray, sample_rate: int, channels: int) -> None:
    check_rate(sample_rate)
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(interleaved.astype("<i2").tobytes())


def write_wav(path: PathLike, audio: Track, sample_rate: int = 16000) -> None:
    """Write a mono 16-bit WAV from float samples in [-1, 1), int16 samples, or PCM16 bytes."""
    _write(path, _pcm16(audio, "audio"), sample_rate, 1)


def write_stereo_wav(path: PathLike, left: Track, right: Track, sample_rate: int = 16000) -> None:
    """Write a stereo 16-bit WAV from two mono tracks (by convention user left, assistant right).

    Tracks may differ in length; the shorter is padded with silence at its end.
    """
    a, b = _pcm16(left, "left"), _pcm16(right, "right")
    n = max(a.size, b.size)
    frames = np.zeros((n, 2), dtype="<i2")
    frames[: a.size, 0] = a
    frames[: b.size, 1] = b
    _write(path, frames.reshape(-1), sample_rate, 2)
