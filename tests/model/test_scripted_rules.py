"""The scripted policy's rules for declining, self-corrections, timers, arithmetic, images, live translation
and a user who went away — stepped directly, tick by tick."""

from __future__ import annotations

import numpy as np

from microturn.messages import InputChunk
from microturn.model.protocol import ModelSpec, StepInput
from microturn.model.scripted import ScriptedPolicy, ScriptedSession

from test_scripted import Conversation, state


def answer(text: str, conv: Conversation | None = None, ticks: int = 40):
    """Say ``text`` as one turn, yield, and collect what the policy says and asks for."""
    conv = conv or Conversation()
    conv.step(text, dialog=state("speaking"))
    said = conv.run(ticks, dialog=state("yielding", floor="none"))
    tools = [o.tool_call for o in conv.outputs if o.tool_call is not None]
    delegated = [o.delegate for o in conv.outputs if o.delegate is not None]
    return said, tools, delegated


def test_a_forbidden_request_gets_a_brief_firm_refusal_and_no_tool():
    said, tools, delegated = answer("please delete all my files on the server")
    assert said.startswith("Sorry, I can't help with that.")
    assert len(said.split()) <= 8  # brief: about three seconds of speech
    assert tools == [] and delegated == []


def test_a_self_correction_is_what_gets_answered():
    said, _, _ = answer("book a table for six, no wait, I mean seven")
    assert "seven" in said and "six" not in said
    _, _, delegated = answer("what is the capital of spain, sorry, I meant france?")
    assert delegated == ["what is the capital of france?"]


def test_remind_me_asks_the_timer_tool_with_seconds_and_message():
    said, tools, _ = answer("remind me in 10 seconds to stretch")
    assert said == "Okay, I will remind you in 10 seconds."
    assert tools[0].name == "set_timer"
    assert tools[0].args == {"seconds": 10.0, "message": "Reminder: stretch."}


def test_arithmetic_asks_the_calculator():
    _, tools, _ = answer("what is 12 times 7")
    assert tools[0].name == "calculate" and tools[0].args == {"expression": "12 * 7"}


def test_it_describes_the_last_image_shown():
    conv = Conversation()
    red = np.zeros((2, 40, 40, 3), np.uint8)
    red[..., 0] = 220
    conv.session.step_sync(
        StepInput(chunk=InputChunk(tick=0, patches=red.tobytes(), n_patches=2, image_grids=[(1, 2)]))
    )
    said, _, _ = answer("what do you see", conv)
    assert said == "I see an image of 2 patches, mostly red."
    said, _, _ = answer("what is this")
    assert said == "I don't see any image yet."


def test_live_translation_speaks_over_the_user_on_purpose():
    conv = Conversation()
    said, _, _ = answer("please translate what I say into french", conv)
    assert said == "Sure. I will translate what you say into French."
    out = conv.step("hello my friend", dialog=state("speaking"))  # the user is still talking
    assert out.text == "bonjour" and "translate" in out.controls
    more = conv.run(6, dialog=state("speaking"))
    assert more == "mon ami"
    said, _, _ = answer("stop translating", conv)
    assert said == "Okay, I stopped translating."
    out = conv.step("hello", dialog=state("speaking"))
    assert out.text == ""  # back to listening


def test_translation_a_word_at_a_time_answers_nothing_and_hears_stop_translating():
    conv = Conversation()
    answer("translate what I say into french", conv)
    said = []
    for word in ["hello", "my", "friend"]:  # a text console: one word per tick
        said.append(conv.step(word, dialog=state("speaking")).text)
    said.append(conv.run(8, dialog=state("yielding", floor="none")))
    assert " ".join(w for w in said if w) == "bonjour mon ami"  # and no "I hear you" for the translated turn
    assert conv.step("stop", dialog=state("speaking")).text == ""  # maybe the start of the command: held
    conv.step("translating", dialog=state("speaking"))
    assert conv.run(20, dialog=state("yielding", floor="none")) == "Okay, I stopped translating."
    conv.step("stop", dialog=state("speaking"))
    assert conv.run(20, dialog=state("yielding", floor="none")).endswith("You said stop.")  # back in English
    conv = Conversation()
    answer("translate what I say into french", conv)
    conv.step("stop", dialog=state("speaking"))
    assert conv.run(8, dialog=state("yielding", floor="none")) == "stop"  # the turn ended: it was just a word


def test_a_user_who_went_away_is_asked_once():
    conv = Conversation()
    said = conv.run(10, dialog=state("away", floor="none"))
    assert said == "Are you still there?"
    assert conv.run(20, dialog=state("away", floor="none")) == ""


def test_rules_are_deterministic_for_a_seed():
    runs = {answer("remind me in 5 seconds")[0] for _ in range(3)}
    assert len(runs) == 1
    session = ScriptedSession(ScriptedPolicy(), ModelSpec(seed=3))
    assert session.rng.random() == ScriptedSession(ScriptedPolicy(), ModelSpec(seed=3)).rng.random()
