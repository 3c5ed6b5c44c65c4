"""The reference grammar of scenarios: the names an event's ``after`` or an expectation's ``after``/``start``/
``end`` may point at (``assistant_starts_speaking``, ``user:turn_end#2``, ``dialog:thinking``, ``mark:NAME``,
``event:ID[:start]``). The format checks references with it when a scenario is loaded; the triggers and the
expectations resolve them against a session's messages.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .outcome import USER_EVENT_MARKS

__all__ = ["REFERENCES", "USER_STATES", "Reference", "parse_reference", "check_reference"]

REFERENCES = {
    "start": "the session start (time 0)",
    "assistant_starts_speaking": "the assistant starts an utterance that is not a backchannel",
    "assistant_backchannels": "the assistant starts a backchannel",
    "assistant_stops_speaking": "an assistant utterance ends, completed or interrupted",
    "tool_called": "the assistant calls a tool",
    "tool_result": "a tool result arrives",
    "delegated": "the assistant delegates a task to the background reasoner",
    "background_result": "a final or failed background result arrives",
}
"""The fixed reference names; with them ``dialog:STATE``, ``user:KIND``, ``mark:NAME`` and ``event:ID``."""

USER_STATES = ("speaking", "pausing", "thinking", "yielding", "inviting", "interrupting", "away")


class Reference(NamedTuple):
    """A parsed reference: its name (without ``#N``), which occurrence, and for ``event:`` the event id and
    edge (``end`` or ``start``)."""

    name: str
    nth: int
    event_id: str | None = None
    edge: str = "end"


def parse_reference(text: str, nth: int = 1) -> Reference:
    """Split ``NAME#N`` and ``event:ID[:start]``; no validation (see :func:`check_reference`)."""
    name, sep, count = text.partition("#")
    if sep and count.isdigit():
        nth = int(count)
    if name.startswith("event:"):
        rest = name[len("event:") :]
        if rest.endswith(":start"):
            return Reference(name, nth, rest[: -len(":start")], "start")
        return Reference(name, nth, rest, "end")
    return Reference(name, nth)


def check_reference(text: str, *, event_ids: Any = (), marks: Any = (), nth: int = 1) -> str | None:
    """Why ``text`` is not a valid reference for this scenario (None when it is)."""
    name, sep, count = text.partition("#")
    if sep and not (count.isdigit() and int(count) >= 1):
        return "'#' must be followed by an occurrence number >= 1 (e.g. 'user:turn_end#2')"
    if sep and nth != 1:
        return "give the occurrence either as '#N' or as 'nth', not both"
    occurrence = int(count) if sep else nth
    if name in REFERENCES:
        if name == "start" and occurrence != 1:
            return "the session starts once: the occurrence must be 1"
        return None
    if name.startswith("dialog:"):
        if name[len("dialog:") :] in USER_STATES:
            return None
        return f"unknown dialog state; known: {', '.join('dialog:' + s for s in USER_STATES)}"
    if name.startswith("user:"):
        if name in USER_EVENT_MARKS:
            return None
        return f"unknown user event mark; known: {', '.join(USER_EVENT_MARKS)}"
    if name.startswith("mark:"):
        if name in marks:
            return None
        known = ", ".join(sorted(marks)) or "none"
        return f"no timeline 'mark' event publishes this mark (marks in this scenario: {known})"
    if name.startswith("event:"):
        ref = parse_reference(text)
        if ref.event_id not in event_ids:
            known = ", ".join(sorted(event_ids)) or "none"
            return f"no timeline event has id {ref.event_id!r} (ids in this scenario: {known})"
        if occurrence != 1:
            return "an event happens once: the occurrence must be 1 for event:ID"
        return None
    known = ", ".join([*REFERENCES, "dialog:STATE", "user:KIND", "mark:NAME", "event:ID", "event:ID:start"])
    return f"unknown reference; known: {known}"
