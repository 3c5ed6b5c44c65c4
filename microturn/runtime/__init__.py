"""The actor runtime: actors and mailboxes, the bus, supervision, the session clock, sessions, recordings,
replay and logging. Everything public is re-exported here; the modules behind it are private."""

from microturn.log import capture_logs, configure_logging, get_logger

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
from ._mailbox import Mailbox, Overflow, Subscribe
from ._recording import FORMAT_VERSION, Damage, Recorder, Recording, RecordingHeader, read_recording
from ._replay import KNOWN_FACTORIES, Divergence, ReplayResult, load_factory, register_factory, replay, resolve_factory
from ._session import Session, open_session, run_lockstep
from ._threaded import server_in_thread

__all__ = [
    "FORMAT_VERSION",
    "INPUT_PRIORITY",
    "KNOWN_FACTORIES",
    "TICK_PRIORITY",
    "TIMER_PRIORITY",
    "Actor",
    "Bus",
    "ClockModeError",
    "Damage",
    "Divergence",
    "Mailbox",
    "MicroturnError",
    "Overflow",
    "Recorder",
    "Recording",
    "RecordingError",
    "RecordingHeader",
    "RecordingVersionError",
    "ReplayResult",
    "RestartPolicy",
    "Session",
    "SessionClock",
    "SessionFailed",
    "Subscribe",
    "SubscriptionError",
    "capture_logs",
    "configure_logging",
    "get_logger",
    "load_factory",
    "open_session",
    "read_recording",
    "register_factory",
    "replay",
    "resolve_factory",
    "run_lockstep",
    "server_in_thread",
]
