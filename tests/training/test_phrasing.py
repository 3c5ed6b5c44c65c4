"""Paraphrase pools and phrasing splits: variety, held-out phrasings never used in training, no library text, and
every templated request read by the oracle as the intent it was written for."""

import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.training import phrasing
from microturn.training.dialogs import generate_dialogs, make_dialog

LIBRARY = Path(__file__).resolve().parents[2] / "microturn" / "scenarios" / "library"
N = 4
"""Word n-gram length of the overlap check: shorter runs ("what time is") are generic, not a library sentence."""
GENERIC = {("how", "are", "you", "doing"), ("hello", "how", "are", "you"), ("what", "time", "is", "it"),
           ("what", "is", "the", "capital"), ("is", "the", "capital", "of")}
"""Generic four-word runs any greeting or question may share with the library."""
_COMMAND = {"remind", "me", "in", "seconds", "to"}
"""The oracle's reminder command form ("remind me in 7 seconds to"): generic whatever the number."""


def _generic(gram: tuple[str, ...]) -> bool:
    return gram in GENERIC or all(w in _COMMAND or w.isdigit() for w in gram)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _grams(text: str) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i:i + N]) for i in range(len(w) - N + 1)}


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() if k not in {"kind", "id", "after", "voice", "mode"} for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _library_grams() -> set[tuple[str, ...]]:
    grams: set[tuple[str, ...]] = set()
    for path in sorted(LIBRARY.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        for text in _strings([data.get("timeline", []), data.get("expect", [])]):
            grams |= _grams(text)
    return grams


def _user_lines(dialogs) -> list[str]:
    return [e.text for d in dialogs for e in d.scenario.timeline if getattr(e, "text", None)]


@pytest.fixture(scope="module")
def sample():
    return list(generate_dialogs(11, 300)) + list(generate_dialogs(11, 100, heldout=True))


def test_library_has_text_to_check():
    assert len(_library_grams()) > 100  # the check below would pass vacuously on an unreadable library


def test_no_library_sentence_in_a_generated_corpus(sample):
    library = {g for g in _library_grams() if not _generic(g)}
    hits = Counter(g for line in _user_lines(sample) for g in _grams(line) & library)
    assert not hits, hits.most_common(10)


def test_no_library_sentence_in_any_template():
    library = {g for g in _library_grams() if not _generic(g)}
    for intent, pool in phrasing.INTENTS.items():
        for template in pool:
            assert not _grams(re.sub(r"\{\w+\}", "SLOT", template)) & library, (intent, template)


def test_every_intent_has_eight_phrasings_and_a_heldout_part():
    for intent, pool in phrasing.INTENTS.items():
        train, held = phrasing.split_pool(pool, "train"), phrasing.split_pool(pool, "heldout")
        assert len(pool) >= 8 and len(set(pool)) == len(pool), intent
        assert held and train and not set(train) & set(held), intent
        assert set(train) | set(held) == set(pool)


def _slot(name: str) -> str:
    if name in {"a", "b", "n"}:
        return r"\d+(?:\.\d+)?"
    if name == "op":
        return "|".join(re.escape(w) for w, _ in phrasing.OPERATORS)
    return "|".join(re.escape(v) for v in phrasing.SLOTS[name])


def _template_of(intent: str, line: str) -> str | None:
    """The template of ``intent`` that ``line`` was filled from (slots match only their own values)."""
    for template in phrasing.INTENTS[intent]:
        parts = re.split(r"\{(\w+)\}", template)
        pattern = "".join(re.escape(p) if i % 2 == 0 else f"(?:{_slot(p)})" for i, p in enumerate(parts))
        if re.fullmatch(pattern, line):
            return template
    return None


def test_heldout_phrasings_never_reach_a_training_corpus(sample):
    held = {t for pool in phrasing.INTENTS.values() for t in phrasing.split_pool(pool, "heldout")}
    train = {t for pool in phrasing.INTENTS.values() for t in phrasing.split_pool(pool, "train")}
    used = {"train": Counter(), "heldout": Counter()}
    for d in sample:
        split = "heldout" if d.scenario.name.startswith("heldout") else "train"
        for line in _user_lines([d]):
            for intent in phrasing.INTENTS:
                if (t := _template_of(intent, line)) is not None:
                    used[split][t] += 1
    assert used["train"] and used["heldout"]
    assert not set(used["train"]) & held, set(used["train"]) & held
    assert not set(used["heldout"]) & train, set(used["heldout"]) & train


def test_heldout_dialogs_may_keep_train_phrasings():
    a = make_dialog(5, categories=["arithmetic"], phrasings="train")
    b = make_dialog(5, categories=["arithmetic"], phrasings="heldout")
    assert _user_lines([a]) != _user_lines([b])
    held = list(generate_dialogs(3, 20, heldout=True, phrasings="train"))
    train = {t for pool in phrasing.INTENTS.values() for t in phrasing.split_pool(pool, "train")}
    seen = {_template_of(i, line) for line in _user_lines(held) for i in phrasing.INTENTS} - {None}
    assert seen and seen <= train


def test_bad_phrasing_split_names_the_value():
    with pytest.raises(ValueError, match="phrasings.*'sideways'"):
        make_dialog(1, phrasings="sideways")


def test_phrasings_and_numbers_vary(sample):
    lines = _user_lines(sample)
    assert len(set(lines)) > 600  # of ~2000 lines, backchannels and "stop translating" repeat by design
    numbers = {w for line in lines for w in _words(line) if re.fullmatch(r"\d+", w)}
    assert len(numbers) > 80
    decimals = [line for line in lines if re.search(r"\d\.\d", line)]
    assert decimals
    templates = {_template_of(i, line) for line in lines for i in phrasing.INTENTS} - {None}
    assert len(templates) > 40


@settings(max_examples=200, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32), split=st.sampled_from(phrasing.PHRASINGS))
def test_oracle_reads_each_template_as_its_intent(seed, split):
    """Templates are read by the oracle's rule table (the labels), so a paraphrase can never teach a wrong action."""
    import random

    from microturn.model import scripted
    from microturn.model.scripted import ScriptedPolicy  # noqa: F401  (the rule table below is the policy's)
    rng = random.Random(seed)
    intent = rng.choice(sorted(phrasing.INTENTS))
    line = phrasing.pick(rng, intent, split)
    if "{a}" in line:
        word, _ = rng.choice(phrasing.OPERATORS)
        line = line.format(a=phrasing.number(rng)[0], op=word, b=phrasing.number(rng)[0])
    line = line.format_map({"n": "7", "what": "feed the fish"})
    low = " ".join(w.lower().strip(".,!?;:\"'") for w in scripted._corrected(line.split()))
    assert low == " ".join(w.lower().strip(".,!?;:\"'") for w in line.split()), line  # no stray correction cue
    declines = bool(scripted._DECLINE.search(low))
    assert declines == (intent == "decline"), line
    if intent == "arithmetic":
        assert scripted._ARITH.search(low), line
    if intent == "reminder":
        assert scripted._REMIND.search(low), line
    if intent == "time":
        assert scripted._TIME.search(low) or scripted._TIME_Q.search(low), line
    if intent in {"capital", "weather", "train", "recipe"}:
        assert line.endswith("?") and not scripted._TIME.search(low) and not scripted._ARITH.search(low), line
    if intent == "greeting":
        assert scripted._GREETING.search(low) and not line.endswith("?"), line
    if intent == "how_are_you":
        assert scripted._HOW_ARE_YOU.search(low), line
