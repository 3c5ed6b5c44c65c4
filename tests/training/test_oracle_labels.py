"""Every generated dialog is labelled by the oracle as the kind of action its requests ask for (a property over many
seeds and both phrasing splits): a calculate call with the spoken operands, a refusal, a session_time call, a
delegated goal carrying the user's words, a set_timer call; text mode keeps it fast (no espeak)."""

import re

import pytest

from microturn.model.references import ReferenceBook
from microturn.training.corpus import run_dialog
from microturn.training.dialogs import dialog_seed, make_dialog

SEEDS = 12


def _outputs(category: str, seed: int, phrasings: str):
    d = make_dialog(seed, categories=[category], text_fraction=1.0, phrasings=phrasings)
    ticks, _ = run_dialog(d)
    user = " ".join(e.text for e in d.scenario.timeline if getattr(e, "text", None))
    return user, [t.output for t in ticks]


@pytest.mark.parametrize("phrasings", ["train", "heldout"])
@pytest.mark.parametrize("category", ["arithmetic", "decline", "time", "question", "reminder", "greeting"])
def test_oracle_acts_on_every_phrasing(category, phrasings):
    for i in range(SEEDS):
        user, outs = _outputs(category, dialog_seed(21, i, heldout=phrasings == "heldout"), phrasings)
        tools = [o.tool_call for o in outs if o.tool_call is not None]
        spoken = " ".join(" ".join(o.text for o in outs).split())
        if category == "arithmetic":
            assert [t.name for t in tools] == ["calculate"], user
            a, b = re.findall(r"\d+(?:\.\d+)?", user)[:2]
            assert re.findall(r"\d+(?:\.\d+)?", tools[0].args["expression"]) == [a, b], (user, tools[0].args)
        elif category == "decline":
            assert "can't help" in spoken and not tools, user
        elif category == "time":
            assert [t.name for t in tools] == ["session_time"], user
        elif category == "question":
            # The oracle delegates the user's words by reference; the actor's book renders them back.
            book = ReferenceBook()
            book.add_user(user)
            goals = [book.resolve(o.delegate) for o in outs if o.delegate]
            assert goals == [(user, [])], (user, goals)
        elif category == "reminder":
            assert [t.name for t in tools] == ["set_timer"], user
        else:  # a greeting is greeted back, never echoed or delegated
            assert spoken and "You said" not in spoken and not tools, (user, spoken)
            assert not any(o.delegate for o in outs), user
