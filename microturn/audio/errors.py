"""Exceptions raised by the audio package.

Each error names the offending field and value so that a bad message from a transport or a scenario can be
traced without a debugger.
"""

from __future__ import annotations

__all__ = ["AudioInputError", "SynthesisError", "SynthesisUnavailable", "VADUnavailable", "WavFormatError"]


class AudioInputError(ValueError):
    """Audio input that cannot be used as given (bad rate, bad length, NaN samples, too long, ...)."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}={value!r}: {problem}")


class WavFormatError(AudioInputError):
    """A WAV file that is missing, corrupt, or not 16-bit PCM; the message names the path."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__("path", str(path), problem)


class SynthesisUnavailable(RuntimeError):
    """The speech synthesiser (espeak-ng) is not installed or cannot be started."""


class SynthesisError(RuntimeError):
    """espeak-ng ran but failed (unknown voice, bad output, ...)."""


class VADUnavailable(RuntimeError):
    """An optional voice-activity detector was requested but its package is not installed."""
