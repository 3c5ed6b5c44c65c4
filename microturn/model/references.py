"""Content by reference: words the model says by pointing at an input instead of spelling it (torch-free).

A model that spells every byte cannot copy a number or a name reliably, and it should not have to: the facts come
from the tools and the background model. So the output text may hold *reference words*, an ASCII ``SOH`` byte
(``\\x01``, never in spoken text) followed by a kind letter and an optional index:

* ``\\x01T`` - the value of the most recent tool result the model was fed; ``\\x01T{n}`` - of the session's n-th.
* ``\\x01B`` - the text of the most recent final background result; ``\\x01B{n}`` - of the session's n-th.
* ``\\x01L{n}`` - the user's last ``n`` words fed; ``\\x01U{i}-{j}`` - the user's words ``i`` to ``j`` of the
  session (from 1, inclusive). A delegated goal is the user's question said by reference, a few bytes instead of
  the whole question spelled in the slots.

References travel as ordinary text bytes (every byte is already in the model's output vocabulary, so the layout
and old checkpoints are untouched). The interaction actor keeps what it fed the model in a
:class:`ReferenceBook` and renders each reference verbatim before the text reaches the output mixer. A
reference that does not resolve (an index never fed, or one evicted from the bounded book) renders as nothing and
is reported, so the assistant never invents content.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import msgspec

__all__ = ["REF", "ReferenceBook", "bg_ref", "render_value", "tool_ref", "words_ref"]

REF = "\x01"
"""The byte that opens a reference word."""

_PATTERN = re.compile("\x01(?:([TB])([0-9]{0,6})|U([0-9]{1,7})-([0-9]{1,7})|L([0-9]{1,4}))")
MAX_KEPT = 32
"""How many tool results and background results a book keeps, each (older ones no longer resolve)."""
MAX_WORDS = 1024
"""How many of the user's words a book keeps (older ones no longer resolve)."""


def tool_ref(n: int | None = None) -> str:
    """The reference word for the n-th tool result of the session (None: the most recent)."""
    return f"{REF}T" if n is None else f"{REF}T{n}"


def bg_ref(n: int | None = None) -> str:
    """The reference word for the n-th final background result of the session (None: the most recent)."""
    return f"{REF}B" if n is None else f"{REF}B{n}"


def words_ref(fed: list[str], words: list[str], offset: int = 0) -> str | None:
    """The shortest reference to ``words`` among the user's latest words ``fed`` (``offset`` older ones dropped):
    ``\\x01L{n}`` when they are the last n, else ``\\x01U{i}-{j}`` for their latest occurrence; None if they
    are not a contiguous run of what was fed (they must then be spelled)."""
    n = len(words)
    if not n or n > len(fed):
        return None
    if fed[-n:] == words:
        return f"{REF}L{n}"
    for start in range(len(fed) - n, -1, -1):
        if fed[start:start + n] == words:
            return f"{REF}U{offset + start + 1}-{offset + start + n}"
    return None


def render_value(value: Any) -> str:
    """A tool result's value as words: a float to one decimal (what a voice says), an int or text as it is,
    anything else as JSON."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (int, str)):
        return str(value)
    return msgspec.json.encode(value).decode()


class ReferenceBook:
    """What the model was fed that it may refer to, numbered in the order it was fed (from 1)."""

    def __init__(self, keep: int = MAX_KEPT) -> None:
        if not 1 <= keep <= 4096:
            raise ValueError(f"keep: expected 1..4096, got {keep}")
        self.keep = keep
        self.tools: OrderedDict[int, str] = OrderedDict()
        self.backgrounds: OrderedDict[int, str] = OrderedDict()
        self.n_tools = 0
        self.n_backgrounds = 0
        self.words: list[str] = []
        self.n_words = 0
        """User words fed so far (``words`` holds the last MAX_WORDS of them)."""
        self.unresolved = 0
        """References that rendered as nothing (counted, never guessed)."""

    def add_tool(self, ok: bool, value: Any) -> None:
        """Note a tool result fed to the model (a failed one is numbered too, but has no value to say)."""
        self.n_tools += 1
        if ok:
            self._put(self.tools, self.n_tools, render_value(value))

    def add_background(self, status: str, text: str) -> None:
        """Note a background update fed to the model; only final ones are numbered."""
        if status != "final":
            return
        self.n_backgrounds += 1
        self._put(self.backgrounds, self.n_backgrounds, text.strip())

    def add_user(self, text: str) -> None:
        """Note the user's words fed to the model (split at whitespace, as the oracle counts them)."""
        words = text.split()
        self.words += words
        self.n_words += len(words)
        del self.words[: max(0, len(self.words) - MAX_WORDS)]

    def _span(self, first: int, last: int) -> str | None:
        """User words first..last (1-based, inclusive), or None when not all are kept."""
        oldest = self.n_words - len(self.words) + 1
        if first < oldest or last > self.n_words or first > last:
            return None
        return " ".join(self.words[first - oldest:last - oldest + 1])

    def _put(self, table: OrderedDict[int, str], n: int, text: str) -> None:
        table[n] = text
        while len(table) > self.keep:
            table.popitem(last=False)

    def resolve(self, text: str) -> tuple[str, list[str]]:
        """``text`` with every reference rendered, and the references that did not resolve."""
        if REF not in text:
            return text, []
        missing: list[str] = []

        def sub(match: re.Match[str]) -> str:
            kind, index, first, last_word, tail = match.groups()
            if tail is not None:
                found = self._span(self.n_words - int(tail) + 1, self.n_words) if int(tail) else None
            elif first is not None:
                found = self._span(int(first), int(last_word))
            else:
                table, last = (self.tools, self.n_tools) if kind == "T" else (self.backgrounds, self.n_backgrounds)
                found = table.get(int(index) if index else last)
            if found is None:
                missing.append(match.group(0)[1:])
                return ""
            return found

        rendered = _PATTERN.sub(sub, text)
        if REF in rendered:  # a bare SOH or an unknown kind: never speak a control byte
            missing.append("?")
            rendered = rendered.replace(REF, "")
        self.unresolved += len(missing)
        return " ".join(rendered.split()), missing
