"""Scenarios for researchers: the format, the virtual-time runner, Full-Duplex-Bench metrics and reports."""

from .outcome import USER_EVENT_MARKS, ExpectationOutcome

__all__ = ["ExpectationOutcome", "USER_EVENT_MARKS"]
