"""``search_knowledge``: keyword search over a local knowledge file, for offline use.

The file is TOML (decoded by msgspec): a list of ``[[facts]]``, each with a ``title``, the ``text`` that
answers it and optional ``keywords``. microturn ships a small one (``microturn/tools/knowledge.toml``:
capitals, physical constants, a few more); point :func:`make_search_knowledge` at your own.

Scoring is deliberately simple and deterministic: the question's content words (stop words removed, a
trailing plural "s" stripped) are matched against each fact's words; a fact scores the sum of the inverse
document frequencies of the words it matches, and is returned only if it covers enough of the question
(``min_coverage``), so "the weather in Paris" does not come back as "the capital of France is Paris".
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import msgspec

from .errors import ToolError
from .registry import Tool, tool

__all__ = ["Fact", "KnowledgeBase", "make_search_knowledge", "DEFAULT_KNOWLEDGE"]

_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_STOP = frozenset(
    """a an the is are was were be been am of in on at to for from by with and or not no do does did what
    which who whom whose where when why how me my you your we our us i it its this that these those there
    tell know please can could would will should about give show find look up let much s""".split()
)


def _terms(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words if w not in _STOP]


class Fact(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a knowledge file."""

    title: str
    text: str
    keywords: list[str] = []


class _KnowledgeFile(msgspec.Struct, frozen=True, kw_only=True):
    facts: list[Fact] = []


DEFAULT_KNOWLEDGE = "knowledge.toml"
"""The knowledge file shipped inside ``microturn.tools``."""


class KnowledgeBase:
    """Facts loaded from a knowledge file, searchable by keywords."""

    def __init__(self, facts: list[Fact]) -> None:
        self.facts = list(facts)
        self._terms = [set(_terms(" ".join([f.title, f.text, *f.keywords]))) for f in self.facts]
        df: dict[str, int] = {}
        for terms in self._terms:
            for t in terms:
                df[t] = df.get(t, 0) + 1
        n = max(1, len(self.facts))
        self._idf = {t: math.log(1 + n / d) for t, d in df.items()}

    @classmethod
    def load(cls, path: str | Path | None = None) -> KnowledgeBase:
        """Read a knowledge file (the shipped one when ``path`` is None); errors name the file and field."""
        try:
            if path is None:
                data = resources.files("microturn.tools").joinpath(DEFAULT_KNOWLEDGE).read_bytes()
                where = f"microturn/tools/{DEFAULT_KNOWLEDGE}"
            else:
                data = Path(path).read_bytes()
                where = str(path)
        except OSError as exc:
            raise ToolError(f"cannot read the knowledge file: {exc}") from None
        try:
            parsed = msgspec.toml.decode(data, type=_KnowledgeFile)
        except msgspec.DecodeError as exc:
            raise ToolError(f"knowledge file {where} is not valid: {exc}") from None
        return cls(parsed.facts)

    def search(self, query: str, limit: int = 3, min_coverage: float = 0.6) -> list[dict[str, Any]]:
        """The best facts for ``query``: ``{"title", "text", "score", "coverage"}``, best first."""
        wanted = list(dict.fromkeys(_terms(query)))
        if not wanted:
            return []
        hits = []
        for i, terms in enumerate(self._terms):
            matched = [t for t in wanted if t in terms]
            coverage = len(matched) / len(wanted)
            if matched and coverage >= min_coverage:
                score = sum(self._idf[t] for t in matched)
                hits.append((-score, i, coverage))
        hits.sort()
        return [
            {
                "title": self.facts[i].title,
                "text": self.facts[i].text,
                "score": round(-neg, 4),
                "coverage": round(coverage, 4),
            }
            for neg, i, coverage in hits[:limit]
        ]


def make_search_knowledge(path: str | Path | None = None, *, name: str = "search_knowledge") -> Tool:
    """Build a ``search_knowledge`` tool over the knowledge file at ``path`` (the shipped one by default).
    The file is read once, here, so a broken file fails at start-up rather than mid-conversation."""
    base = KnowledgeBase.load(path)

    async def search_knowledge(
        query: Annotated[str, msgspec.Meta(min_length=1, max_length=500, description="the question")],
        limit: Annotated[int, msgspec.Meta(ge=1, le=20, description="most facts to return")] = 3,
    ) -> list[dict[str, Any]]:
        """Search the local knowledge file for facts that answer a question; best match first."""
        return base.search(query, limit=limit)

    search_knowledge.__name__ = name
    made = tool(search_knowledge, name=name, timeout=5.0)
    made.knowledge = base  # type: ignore[attr-defined]
    return made
