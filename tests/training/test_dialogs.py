"""The randomized dialog generator: deterministic, valid scenarios, every category, disjoint splits."""

from collections import Counter

import pytest

from microturn.scenarios.format import encode_scenario
from microturn.training.dialogs import CATEGORIES, dialog_seed, generate_dialogs, make_dialog


def test_same_seed_same_scenario():
    a = [encode_scenario(d.scenario) for d in generate_dialogs(7, 10)]
    b = [encode_scenario(d.scenario) for d in generate_dialogs(7, 10)]
    assert a == b
    c = [encode_scenario(d.scenario) for d in generate_dialogs(8, 10)]
    assert a != c


def test_train_and_heldout_seeds_are_disjoint():
    train = {dialog_seed(0, i) for i in range(2000)} | {dialog_seed(1, i) for i in range(2000)}
    held = {dialog_seed(0, i, heldout=True) for i in range(2000)} | {dialog_seed(1, i, heldout=True) for i in range(2000)}
    assert len(train) == 4000 and len(held) == 4000
    assert not train & held
    assert all(s % 2 == 0 for s in train) and all(s % 2 == 1 for s in held)
    names = {d.scenario.name for d in generate_dialogs(0, 5)} | {d.scenario.name for d in generate_dialogs(0, 5, heldout=True)}
    assert len(names) == 10


def test_every_category_appears_over_80_dialogs():
    seen = Counter(c for d in generate_dialogs(0, 80) for c in d.categories)
    assert set(seen) == set(CATEGORIES), set(CATEGORIES) - set(seen)
    modes = Counter(d.mode for d in generate_dialogs(0, 80))
    assert modes["text"] > 5 and modes["speech"] > 40  # text for a fraction, espeak speech for most


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_builds_a_valid_scenario(category):
    d = make_dialog(123, categories=[category])
    assert d.categories == [category]
    assert d.scenario.duration > 1.0
    assert category in d.scenario.tags
    if category == "reminder":
        assert d.world == "builtin"  # the real set_timer fires the reminder


def test_voices_and_rates_vary():
    dialogs = list(generate_dialogs(3, 40, text_fraction=0.0))
    assert len({d.voice for d in dialogs}) > 5
    assert len({d.wpm for d in dialogs}) > 4
    assert all(d.mode == "speech" for d in dialogs)


def test_unknown_category_is_refused():
    with pytest.raises(ValueError, match="unknown dialog categories"):
        make_dialog(1, categories=["juggling"])
