"""The actor runtime: actors and mailboxes, the bus, supervision, the session clock, sessions, recordings,
replay and logging. Everything public is re-exported here; the modules behind it are private."""

from ._actor import Actor, RestartPolicy
from ._bus import Bus
from ._clock import INPUT_PRIORITY, TICK_PRIORITY, TIMER_PRIORITY, SessionClock
from ._errors import (
    ClockModeError,
    MicroturnError,
    RecordingError,
    RecordingVersionError,
    SessionFailed,
    SubscriptionError,
)
from microturn.log import capture_logs, configure_logging, get_logger
from ._mailbox import Mailbox, Overflow, Subscribe
from ._recording import FORMAT_VERSION, Recorder, Recording, RecordingHeader, read_recording
from ._replay import Divergence, ReplayResult, load_factory, replay
from ._session import Session, open_session, run_lockstep

__all__ = [
    "Actor",
    "RestartPolicy",
    "Bus",
    "SessionClock",
    "TICK_PRIORITY",
    "INPUT_PRIORITY",
    "TIMER_PRIORITY",
    "MicroturnError",
    "SessionFailed",
    "ClockModeError",
    "SubscriptionError",
    "RecordingError",
    "RecordingVersionError",
    "configure_logging",
    "get_logger",
    "capture_logs",
    "Mailbox",
    "Overflow",
    "Subscribe",
    "FORMAT_VERSION",
    "Recorder",
    "Recording",
    "RecordingHeader",
    "read_recording",
    "Session",
    "open_session",
    "run_lockstep",
    "Divergence",
    "ReplayResult",
    "replay",
    "load_factory",
]
