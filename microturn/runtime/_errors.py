"""The runtime's small, specific exception classes."""

from __future__ import annotations


class MicroturnError(Exception):
    """Base of every error the runtime raises on purpose."""


class SessionFailed(MicroturnError):
    """The session ended because an actor failed beyond its restart policy (or failed to start)."""

    def __init__(self, actor: str, cause: BaseException) -> None:
        self.actor = actor
        self.cause = cause
        super().__init__(f"actor {actor!r} failed: {type(cause).__name__}: {cause}")


class ClockModeError(MicroturnError):
    """A clock mode was asked for that the current trio run cannot provide (lockstep needs a MockClock)."""


class SubscriptionError(MicroturnError, ValueError):
    """An actor declared a subscription that cannot work (bad type, policy or bound)."""


class RecordingError(MicroturnError):
    """A file is not a microturn recording, or it cannot be read or written."""


class RecordingVersionError(RecordingError):
    """A recording was written by a newer format version than this microturn reads."""
