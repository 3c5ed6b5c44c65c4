"""Secret redaction that also catches a secret echoed back changed: in another case, cut short, or in part.

A server that answers with the API key lower-cased, or with its last character dropped, defeats a plain
``text.replace(key, "***")``. :class:`Redactor` instead masks every run of the text that shares
:data:`MIN_RUN` consecutive characters with a secret, compared case-insensitively, so any piece of a secret
of 8 characters or more — a prefix, a suffix, the middle — is masked wherever it appears. Secrets shorter
than that are masked whole.

Secrets registered with :func:`register_secret` are also masked in every log event (the processor
:func:`redact_event` runs among microturn's logging processors), as a second line of defence behind the code
that holds the secret redacting its own errors and results.

This module sits at the bottom of the package, beside ``log``, and imports nothing from microturn.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "MIN_RUN", "Redactor", "redact", "redact_event", "register_secret"]

MIN_RUN = 8
"""The shortest piece of a secret that is masked on its own."""

MASK = "***"
"""What a masked run becomes."""


def _fold(text: str) -> str:
    """Lower case, one character for one (so positions in the folded text are positions in the original)."""
    return "".join(c if len(low := c.lower()) != 1 else low for c in text) if not text.isascii() else text.lower()


class Redactor:
    """Masks every piece of ``secrets`` (see the module docs) in the text it is called on."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._grams: dict[int, set[str]] = {}
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Mask ``secret`` too (empty strings are ignored)."""
        if not secret:
            return
        folded = _fold(secret)
        width = min(MIN_RUN, len(folded))
        grams = self._grams.setdefault(width, set())
        grams.update(folded[i : i + width] for i in range(len(folded) - width + 1))

    def __bool__(self) -> bool:
        return bool(self._grams)

    def __call__(self, text: str) -> str:
        """``text`` with every run that shares a piece with a secret replaced by :data:`MASK`."""
        if not self._grams or not text:
            return text
        folded = _fold(text)
        hidden = bytearray(len(text))
        found = False
        for width, grams in self._grams.items():
            for i in range(len(folded) - width + 1):
                if folded[i : i + width] in grams:
                    hidden[i : i + width] = b"\x01" * width
                    found = True
        if not found:
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            if hidden[i]:
                while i < len(text) and hidden[i]:
                    i += 1
                out.append(MASK)
            else:
                start = i
                while i < len(text) and not hidden[i]:
                    i += 1
                out.append(text[start:i])
        return "".join(out)


_registered = Redactor()
_lock = threading.Lock()


def register_secret(secret: str) -> None:
    """Mask ``secret`` (and its pieces) in every log event from now on, process-wide."""
    with _lock:
        _registered.add(secret)


def redact(text: str) -> str:
    """``text`` with the registered secrets masked."""
    return _registered(text)


def redact_event(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: masks registered secrets in every string value of the event (an exception's
    text too, where one is attached as a value)."""
    if not _registered:
        return event_dict
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = _registered(value)
        elif isinstance(value, BaseException) and key != "exc_info":
            event_dict[key] = _registered(repr(value))
    return event_dict
