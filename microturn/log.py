"""Structured logging: structlog configured once, every event stamped with session time, tick and actor.

It sits at the bottom of the package (beside ``messages``) so every layer logs the same way; the runtime
re-exports it and fills in the session context.

Event time is the session clock's, never the wall clock's (structlog's TimeStamper reads the wall clock, so it
is not used). The processors are plain functions, so tests can run them in front of structlog's own
``LogCapture`` (see :func:`capture_logs`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from typing import IO, Any, Protocol

import structlog

from microturn.redaction import redact_event

__all__ = ["configure_logging", "get_logger", "capture_logs", "add_session_fields", "SESSION_PROCESSORS"]


class _ClockLike(Protocol):
    tick: int

    def now(self) -> float: ...


current_session: contextvars.ContextVar[tuple[str, _ClockLike] | None] = contextvars.ContextVar(
    "microturn_session", default=None
)
current_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar("microturn_actor", default=None)


def add_session_fields(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Add ``session``, session time ``t`` (seconds), ``tick`` and ``actor`` from the running session."""
    session = current_session.get()
    if session is not None:
        session_id, clock = session
        event_dict.setdefault("session", session_id)
        try:
            event_dict.setdefault("t", round(clock.now(), 6))
        except RuntimeError:  # logged outside trio (e.g. while tearing down): there is no session time
            event_dict.setdefault("t", None)
        event_dict.setdefault("tick", clock.tick)
    actor = current_actor.get()
    if actor is not None:
        event_dict.setdefault("actor", actor)
    return event_dict


SESSION_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    add_session_fields,
    redact_event,  # last: whatever the fields above hold, a registered secret does not get out
]
"""The processors every microturn log event goes through before it is rendered."""

_configured = False


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the time of writing (test runners and consoles swap it out, and a
    logger holding on to an old one would write to a closed file)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "warning", *, json_file: str | IO[str] | None = None) -> None:
    """Configure structlog for microturn: JSON lines to ``json_file`` when given, readable console output on
    stderr otherwise. Safe to call again (the last call wins)."""
    global _configured
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level {level!r} is not one of debug, info, warning, error, critical")
    if json_file is not None:
        stream = open(json_file, "a", encoding="utf-8") if isinstance(json_file, str) else json_file  # noqa: SIM115
        renderer: Any = structlog.processors.JSONRenderer()
        processors = [*SESSION_PROCESSORS, structlog.processors.format_exc_info, renderer]
    else:
        stream = _CurrentStderr()
        processors = [*SESSION_PROCESSORS, structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A lazy structlog logger with ``initial`` values bound; configures microturn's defaults (warnings and
    up, on stderr) first if nobody has configured structlog."""
    if not _configured and not structlog.is_configured():
        configure_logging()
    return structlog.get_logger(name, **initial) if name else structlog.get_logger(**initial)


@contextlib.contextmanager
def capture_logs(level: str = "debug") -> Iterator[list[dict[str, Any]]]:
    """Capture log events as dicts, after microturn's own processors have run (so ``t``, ``tick`` and
    ``actor`` are present), using structlog's ``LogCapture``."""
    global _configured
    capture = structlog.testing.LogCapture()
    old = structlog.get_config()
    old_configured = _configured
    structlog.configure(
        processors=[*SESSION_PROCESSORS, capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=False,
    )
    _configured = True
    try:
        yield capture.entries
    finally:
        structlog.configure(**old)
        _configured = old_configured
