"""The shared turn-cue lexicon: multi-word backchannels, thinking aloud and unfinished endings, judged the same
by the lexicon, the dialog state and the scripted oracle. Properties over seeded word lists, with words the
project's scenarios do not use."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_scripted_rules import answer

from microturn.actors.dialog_state import DialogStateMachine, text_cue
from microturn.model.turn_cues import (
    BACKCHANNEL_PHRASES,
    THINKING_PHRASES,
    TRAILING_WORDS,
    ends_thinking,
    ends_unfinished,
    is_backchannel,
    normalise,
)

SPEECH, QUIET = 0.9, 0.05
# Content words none of the lexicon's lists hold: a turn made of them is a real, finished turn.
CONTENT = ("giraffes", "marmalade", "tuesday", "umbrella", "violin", "harbour", "pancakes", "glacier", "llamas")
PHRASES = sorted(" ".join(p) for p in BACKCHANNEL_PHRASES)
THINKING = sorted(" ".join(p) for p in THINKING_PHRASES)
TRAILING = sorted(TRAILING_WORDS)
_SETTINGS = settings(max_examples=150, derandomize=True, deadline=None)


def test_normalise_splits_hyphens_and_drops_punctuation() -> None:
    assert normalise("Uh-huh, I SEE!") == ("uh", "huh", "i", "see")
    assert normalise(["Mm-hm.", "'right'"]) == ("mm", "hm", "right")
    assert normalise("") == ()


@_SETTINGS
@given(st.lists(st.sampled_from(PHRASES), min_size=1, max_size=4), st.sampled_from([" ", ", ", "-", ". "]))
def test_any_run_of_backchannel_phrases_is_a_backchannel(phrases: list[str], sep: str) -> None:
    assert is_backchannel(sep.join(phrases))


@_SETTINGS
@given(st.lists(st.sampled_from(PHRASES), min_size=1, max_size=3), st.sampled_from(CONTENT), st.integers(0, 3))
def test_a_content_word_anywhere_makes_it_a_turn(phrases: list[str], word: str, at: int) -> None:
    words = " ".join(phrases).split()
    words.insert(min(at, len(words)), word)
    assert not is_backchannel(words)


@pytest.mark.parametrize("text", ["I see", "got it", "uh huh", "that makes sense", "oh, I see.", "fair enough"])
def test_multi_word_backchannels(text: str) -> None:
    assert is_backchannel(text)
    assert not is_backchannel("")


@_SETTINGS
@given(st.lists(st.sampled_from(CONTENT), min_size=1, max_size=5), st.sampled_from(TRAILING))
def test_a_trailing_function_word_leaves_the_turn_unfinished(words: list[str], last: str) -> None:
    text = " ".join([*words, last])
    assert ends_unfinished(text) and not ends_unfinished(" ".join(words))
    assert text_cue(text) == "thinking"
    assert text_cue(text + "?") == "inviting"  # a question mark says the speaker is done, whatever the word


@_SETTINGS
@given(st.lists(st.sampled_from(CONTENT), min_size=0, max_size=5), st.sampled_from(THINKING))
def test_thinking_aloud_at_the_end_keeps_the_turn(words: list[str], phrase: str) -> None:
    text = " ".join([*words, phrase])
    assert ends_thinking(text)
    assert text_cue(text) == "thinking"
    assert not ends_thinking(" ".join([phrase, *words])) or not words


def test_an_unfinished_question_is_not_complete() -> None:
    assert text_cue("can you remind me to") == "thinking"
    assert text_cue("can you remind me to water the ferns") == "inviting"


def test_let_me_think_then_a_pause_is_not_taken_over_within_half_a_second() -> None:
    m = DialogStateMachine()
    m.step(SPEECH, "hmm, let me think")
    states = [m.step(QUIET) for _ in range(5)]  # 1 s of silence at 200 ms a tick
    assert {s.user for s in states} == {"thinking"} and {s.floor for s in states} == {"user"}


@_SETTINGS
@given(st.sampled_from(PHRASES), st.integers(1, 4))
def test_a_short_backchannel_over_the_assistant_is_no_turn(phrase: str, ticks: int) -> None:
    m = DialogStateMachine()
    m.assistant_started(1, generation=1)
    m.step(SPEECH, phrase)
    states = [m.step(SPEECH) for _ in range(ticks - 1)] + [m.step(QUIET) for _ in range(3)]
    assert (m.backchannels, m.interruptions) == (1, 0)
    assert {s.floor for s in states} == {"assistant"}


@pytest.mark.parametrize("text", ["I see", "got it", "uh-huh, that makes sense", "oh okay"])
def test_the_oracle_agrees_a_backchannel_is_no_request(text: str) -> None:
    said, tools, _ = answer(text)
    assert said == "" and tools == []  # acknowledgement alone is answered with nothing


def test_the_oracle_answers_a_backchannel_with_a_content_word() -> None:
    said, _, _ = answer("I see the giraffes")
    assert said != ""
