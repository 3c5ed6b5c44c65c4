"""What a scenario's expectation came to, and the marks a scenario leaves on the timeline.

Shared by the runner (which judges expectations), the metrics (which read the marks from a recording) and
the report (which draws both).
"""

from __future__ import annotations

import msgspec

__all__ = ["ExpectationOutcome", "USER_EVENT_MARKS"]


class ExpectationOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One expectation of a scenario, judged: its name (as the scenario wrote it), whether it held, the session
    time it refers to (None when it never got a time, e.g. the event it waits for never happened), and what
    was observed, in words.

    ``judged`` is False for a judged expectation (``kind = "judged"``) that no judge model decided: it is then
    never ``ok`` (not judged is not passed), and it is not a failure either (see :attr:`verdict`)."""

    name: str
    ok: bool
    time: float | None
    observed: str
    judged: bool = True

    @property
    def verdict(self) -> str:
        """``pass``, ``fail`` or ``not judged``."""
        if not self.judged:
            return "not judged"
        return "pass" if self.ok else "fail"


USER_EVENT_MARKS = {
    "user:turn_end": "the user finished a turn and yields it (a smooth turn: the assistant should take over)",
    "user:pause": "a pause inside the user's turn begins (filled or silent: the assistant should NOT take over)",
    "user:pause_end": "the user resumes after a pause",
    "user:backchannel": "the user backchannels while the assistant speaks (the assistant should go on)",
    "user:barge_in": "the user starts talking over the assistant to interrupt it (the assistant should stop)",
    "user:noise": "a cough or noise while the assistant speaks (a false barge-in: it should go on)",
}
"""The ``Mark`` names a scenario publishes (source ``scenario``) at the session time of each user event, so
metrics can be computed from the recording alone. Custom marks from a scenario are named ``mark:<name>``."""
