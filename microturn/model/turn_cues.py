"""One lexicon of turn cues, shared by the dialog state and the scripted oracle so both judge a turn alike.

Three judgements on a turn's words: all of it is acknowledgement ("i see", "uh huh, right") and no turn at all;
it ends thinking aloud ("let me think", "um"), so a pause is no end of turn; it ends on a word that cannot end
an English sentence ("remind me to", "the", "my"), so the turn is unfinished whatever the question opener says.
Words are normalised alike everywhere: lower case, hyphens as spaces ("uh-huh" is "uh huh"), punctuation gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = [
    "BACKCHANNEL_PHRASES",
    "BACKCHANNEL_WORDS",
    "FILLERS",
    "THINKING_PHRASES",
    "TRAILING_WORDS",
    "ends_thinking",
    "ends_unfinished",
    "is_backchannel",
    "normalise",
]

_TOKEN = re.compile(r"[a-z']+")
MAX_PHRASE_WORDS = 5
"""The longest phrase in the lexicon, in words: matching looks back no further."""


def normalise(words: str | Iterable[str]) -> tuple[str, ...]:
    """``words`` (a text or a list of words) as lower-case tokens, hyphens split, punctuation dropped."""
    text = words if isinstance(words, str) else " ".join(words)
    return tuple(t.strip("'") for t in _TOKEN.findall(text.lower().replace("-", " ")) if t.strip("'"))


def _phrases(*texts: str) -> frozenset[tuple[str, ...]]:
    phrases = frozenset(normalise(t) for t in texts)
    if bad := [p for p in phrases if not 0 < len(p) <= MAX_PHRASE_WORDS]:
        raise ValueError(f"lexicon phrases must have 1..{MAX_PHRASE_WORDS} words, got {bad!r}")
    return phrases


BACKCHANNEL_WORDS = frozenset({"mm-hm", "mhm", "mm", "hmm", "uh-huh", "yeah", "yes", "right", "okay", "ok", "sure"})
"""Single words that acknowledge without taking the turn (kept as the oracle's public name)."""

BACKCHANNEL_PHRASES = _phrases(
    *BACKCHANNEL_WORDS, "mm hmm", "uh huh", "yep", "yup", "ah", "oh", "aha", "alright", "all right", "cool", "great",
    "i see", "got it", "gotcha", "i get it", "makes sense", "that makes sense", "fair enough", "of course", "indeed",
    "exactly", "true", "totally", "i know", "sounds good", "that's right", "oh okay", "oh i see", "go on", "really",
    "wow", "nice", "no way", "i understand", "understood", "sure thing", "for sure", "uh yeah", "yeah yeah",
)
"""Phrases that acknowledge the speaker; any sequence made only of these is a backchannel, not a turn."""

FILLERS = frozenset({"um", "umm", "uh", "uhm", "uhh", "erm", "er", "hmm", "hm", "mm", "mmm", "ah", "eh"})
"""Filled pauses: a turn ending on one is still being thought out."""

THINKING_PHRASES = _phrases(
    "let me think", "let me see", "let's see", "lemme think", "lemme see", "you know", "i mean", "hmm well",
    "um well", "oh well then", "how do i put it", "what's the word", "give me a second", "give me a moment",
    "hold on", "one second", "just a second", "sort of", "kind of",
)
"""Phrases of thinking aloud: a turn ending on one is not over."""

TRAILING_WORDS = frozenset(
    # prepositions
    {"to", "for", "of", "in", "on", "at", "by", "with", "from", "into", "onto", "about", "than", "like", "through"}
    | {"over", "under", "between", "after", "before", "during", "without", "towards", "toward", "via", "per"}
    # articles, determiners, possessives
    | {"the", "a", "an", "this", "that", "these", "those", "some", "any", "every", "each", "no", "another"}
    | {"my", "your", "his", "her", "its", "our", "their", "whose"}
    # conjunctions and subordinators
    | {"and", "but", "or", "nor", "so", "because", "if", "although", "though", "while", "unless", "until", "since"}
    | {"whether", "when", "where", "which", "who", "then"}
    # auxiliaries and copulas
    | {"is", "are", "was", "were", "am", "be", "been", "being", "do", "does", "did", "have", "has", "had"}
    | {"can", "could", "will", "would", "shall", "should", "may", "might", "must", "i'm", "it's", "there's"}
    | {"gonna", "wanna", "gotta", "very", "really", "more", "most", "not"}
)
"""Words that cannot end a finished English sentence: "can you remind me to" is not a complete request."""


def _covers(tokens: Sequence[str], phrases: frozenset[tuple[str, ...]]) -> bool:
    """Whether ``tokens`` split wholly into phrases of ``phrases`` (dynamic programming over cut points)."""
    ok = [True] + [False] * len(tokens)
    for end in range(1, len(tokens) + 1):
        ok[end] = any(
            ok[end - n] and tuple(tokens[end - n:end]) in phrases for n in range(1, min(MAX_PHRASE_WORDS, end) + 1)
        )
    return ok[-1]


def is_backchannel(words: str | Iterable[str]) -> bool:
    """Whether ``words`` are nothing but acknowledgement ("i see", "uh-huh, got it"); no words is no backchannel."""
    tokens = normalise(words)
    return bool(tokens) and _covers(tokens, BACKCHANNEL_PHRASES)


def ends_thinking(words: str | Iterable[str]) -> bool:
    """Whether ``words`` end thinking aloud: a filler ("um") or a thinking phrase ("let me think")."""
    tokens = normalise(words)
    if not tokens:
        return False
    return tokens[-1] in FILLERS or any(
        tuple(tokens[-n:]) in THINKING_PHRASES for n in range(1, min(MAX_PHRASE_WORDS, len(tokens)) + 1)
    )


def ends_unfinished(words: str | Iterable[str]) -> bool:
    """Whether ``words`` end on a word no finished sentence ends on ("... remind me to", "... and the")."""
    tokens = normalise(words)
    return bool(tokens) and tokens[-1] in TRAILING_WORDS
