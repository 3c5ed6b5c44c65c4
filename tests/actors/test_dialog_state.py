"""Dialog state: the pure state machine tick by tick, then the actor behind real perception on espeak-ng
speech in lockstep sessions (smooth turn ends, thinking, questions, backchannels, barge-in, away)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from microturn.actors import ClockActor
from microturn.actors.dialog_state import (
    DialogSnapshot,
    DialogStateActor,
    DialogStateMachine,
    DialogTimings,
    text_cue,
)
from microturn.actors.perception import PerceptionActor
from microturn.audio import Synthesizer, espeak_available
from microturn.messages import (
    DialogState,
    InputChunk,
    Message,
    OutputChunk,
    SpeechEnded,
    SpeechStarted,
    UserAudio,
    UserText,
    decode,
    encode,
)
from microturn.runtime import open_session

SPEECH, QUIET = 0.9, 0.05  # a tick's speech probability when the user talks / does not


def _feed(machine: DialogStateMachine, probs: Sequence[float], text: str = "") -> list[DialogSnapshot]:
    """Step once per probability; ``text`` arrives with the first tick."""
    return [machine.step(p, text if i == 0 else "") for i, p in enumerate(probs)]


# --- timings and text cues -----------------------------------------------------------------------------------


def test_default_timings_are_the_documented_seconds_at_200_ms() -> None:
    t = DialogTimings()
    assert (t.onset, t.end_of_turn, t.end_of_turn_closed, t.end_of_turn_max, t.barge_in, t.backchannel_max) == (
        2, 2, 1, 15, 3, 5)
    assert (t.false_interruption, t.away) == (10, 75)
    assert DialogTimings.from_seconds() == t
    fast = DialogTimings.from_seconds(0.1, away=1.0)
    assert (fast.barge_in, fast.end_of_turn_max, fast.away) == (5, 30, 10)
    with pytest.raises(ValueError, match="barge_in"):
        DialogTimings(barge_in=0)
    with pytest.raises(ValueError, match="unknown dialog timing"):
        DialogTimings.from_seconds(bargein=0.5)


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("I want to, um", "thinking"),
        ("so I was thinking uh...", "thinking"),
        ("I'd like the soup and", "thinking"),
        ("it was late because", "thinking"),
        ("I like tea and.", "plain"),
        ("Hmm.", "thinking"),
        ("What time is it?", "inviting"),
        ("it's over there, right?", "inviting"),
        ("where is the station", "inviting"),
        ("Could you book a table for two", "inviting"),
        ("I went home. Can you call me", "inviting"),
        ("What a day!", "plain"),
        ("Do it now.", "plain"),
        ("Hello there, how are you doing today", "plain"),
        ("", "plain"),
        ("...", "plain"),
    ],
)
def test_text_cues(text: str, cue: str) -> None:
    assert text_cue(text) == cue


# --- the state machine, tick by tick -------------------------------------------------------------------------


def test_a_plain_turn_speaks_pauses_then_yields() -> None:
    m = DialogStateMachine()
    assert m.snapshot == ("none", "yielding", "silent")
    assert m.step(SPEECH) == ("none", "yielding", "silent")  # one tick could be a noise onset
    states = _feed(m, [SPEECH] * 4 + [QUIET] * 3)
    assert [s.user for s in states] == ["speaking"] * 4 + ["pausing", "yielding", "yielding"]
    assert [s.floor for s in states] == ["user"] * 4 + ["none"] * 3


def test_a_one_tick_blip_is_not_speech() -> None:
    m = DialogStateMachine()
    states = _feed(m, [SPEECH, QUIET, SPEECH, QUIET])
    assert {s.user for s in states} == {"yielding"}


def test_a_filled_pause_keeps_the_turn_up_to_the_maximum() -> None:
    m = DialogStateMachine()
    assert m.step(SPEECH, "I want to, um").user == "speaking"  # text confirms speech at once
    states = _feed(m, [QUIET] * 16)
    assert [s.user for s in states] == ["thinking"] * 14 + ["yielding"] * 2
    assert [s.floor for s in states[:14]] == ["user"] * 14


def test_speech_after_thinking_continues_the_same_turn() -> None:
    m = DialogStateMachine()
    _feed(m, [SPEECH, SPEECH, QUIET, QUIET], "I want to, um")
    assert m.user == "thinking"
    _feed(m, [SPEECH, SPEECH], "book a table")
    assert [s.user for s in _feed(m, [QUIET, QUIET])] == ["pausing", "yielding"]


def test_a_question_invites_at_once() -> None:
    m = DialogStateMachine()
    m.step(QUIET, "what time is it?")  # a text console: typed text is speech for that tick
    assert m.user == "speaking"
    assert m.step(QUIET) == ("none", "inviting", "silent")


def test_a_closed_sentence_yields_at_the_first_silent_tick() -> None:
    m = DialogStateMachine()
    m.step(SPEECH, "I would like the soup.")
    assert m.step(QUIET) == ("none", "yielding", "silent")  # a finished statement needs no second tick
    m = DialogStateMachine()
    m.step(SPEECH, "I would like the soup")  # a fragment: the ordinary end_of_turn wait
    assert [s.user for s in _feed(m, [QUIET, QUIET])] == ["pausing", "yielding"]


def test_backchannel_words_get_until_backchannel_max_before_they_barge_in() -> None:
    m = DialogStateMachine()
    m.assistant_started(1, generation=1)
    states = _feed(m, [SPEECH] * 4 + [QUIET], "yeah")
    assert [s.user for s in states] == ["speaking"] * 4 + ["pausing"]  # audio alone would barge in at tick 3
    assert (m.backchannels, m.interruptions) == (1, 0)
    states = _feed(m, [SPEECH] * 5, "mm-hm")
    assert states[-1].user == "interrupting"  # but not for ever


def test_audio_without_text_has_no_cues() -> None:
    m = DialogStateMachine()
    _feed(m, [SPEECH, SPEECH, QUIET], "um")
    _feed(m, [SPEECH, SPEECH])  # a new stretch of speech after a pause, with no transcript
    assert [s.user for s in _feed(m, [QUIET] * 2)] == ["pausing", "yielding"]


def test_short_overlap_is_a_backchannel_and_the_assistant_keeps_the_floor() -> None:
    m = DialogStateMachine()
    assert m.assistant_started(1, generation=1) == ("assistant", "yielding", "speaking")
    states = _feed(m, [SPEECH, SPEECH, QUIET, QUIET, QUIET])
    assert [s.user for s in states] == ["yielding", "speaking", "pausing", "pausing", "pausing"]
    assert {s.floor for s in states} == {"assistant"}
    assert (m.backchannels, m.interruptions) == (1, 0)


def test_long_overlap_is_a_barge_in() -> None:
    m = DialogStateMachine()
    m.assistant_started(1, generation=1)
    states = _feed(m, [SPEECH] * 5)
    assert [(s.floor, s.user) for s in states] == [
        ("assistant", "yielding"),
        ("assistant", "speaking"),
        ("user", "interrupting"),
        ("user", "interrupting"),
        ("user", "interrupting"),
    ]
    assert m.assistant_ended(1) == ("user", "interrupting", "silent")
    assert m.interruptions == 1
    states = _feed(m, [SPEECH] * 2 + [QUIET] * 3)  # a long turn: an ordinary ending
    assert [s.user for s in states] == ["interrupting"] * 2 + ["pausing", "yielding", "yielding"]


def test_many_typed_words_barge_in_at_once() -> None:
    m = DialogStateMachine()
    m.assistant_started(1, generation=1)
    assert m.step(QUIET, "please stop talking now") == ("user", "interrupting", "speaking")
    m2 = DialogStateMachine()
    m2.assistant_started(1, generation=1)
    assert m2.step(QUIET, "ok") == ("assistant", "speaking", "speaking")


def test_a_false_interruption_waits_before_yielding() -> None:
    m = DialogStateMachine()
    m.assistant_started(1, generation=1)
    _feed(m, [SPEECH] * 3)
    m.assistant_ended(1)  # the assistant stopped for it
    states = _feed(m, [QUIET] * 11)
    assert [s.user for s in states] == ["pausing"] * 9 + ["yielding"] * 2
    assert m.false_interruptions == 1


def test_the_assistant_talking_over_the_user_leaves_the_user_the_floor() -> None:
    m = DialogStateMachine()
    _feed(m, [SPEECH] * 2)
    assert m.assistant_started(1, generation=1) == ("user", "speaking", "speaking")
    assert [s.user for s in _feed(m, [SPEECH] * 4)] == ["speaking"] * 4  # no barge-in by the user
    assert m.step(QUIET) == ("assistant", "pausing", "speaking")


def test_assistant_backchannels_never_take_the_floor() -> None:
    m = DialogStateMachine()
    _feed(m, [SPEECH] * 2)
    m.assistant_controls(generation=4, controls=["<backchannel>"])  # flagged before it starts
    assert m.assistant_started(7, generation=4) == ("user", "speaking", "backchanneling")
    assert [s.user for s in _feed(m, [SPEECH] * 4)] == ["speaking"] * 4  # not an overlap
    assert m.assistant_ended(7) == ("user", "speaking", "silent")
    m.assistant_started(8, generation=5)
    assert m.assistant == "speaking"
    assert m.assistant_controls(generation=5, controls=["BACKCHANNEL"]).assistant == "backchanneling"


def test_away_after_fifteen_seconds_of_mutual_silence() -> None:
    m = DialogStateMachine()
    states = _feed(m, [QUIET] * 76)
    assert [s.user for s in states].index("away") == 74
    m2 = DialogStateMachine()
    m2.assistant_started(1, generation=1)
    _feed(m2, [QUIET] * 100)  # listening to the assistant is not being away
    m2.assistant_ended(1)
    assert [s.user for s in _feed(m2, [QUIET] * 75)].index("away") == 74
    assert m2.step(SPEECH, "hi").user == "speaking"


# --- the actor behind perception, on real speech -------------------------------------------------------------


@pytest.fixture(scope="module")
def tts(tmp_path_factory: pytest.TempPathFactory) -> Synthesizer:
    """espeak-ng with a cache in a temporary directory (skipped only where espeak-ng is missing)."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    return Synthesizer(cache_dir=tmp_path_factory.mktemp("tts"))


async def _session(inputs: Sequence[tuple[float, Message]], ticks: int):
    """Clock, perception and dialog state in lockstep; returns the ticks the VAD heard speech in, each
    published state as (the last chunk's tick, (floor, user, assistant)), and the dialog actor."""
    dialog = DialogStateActor()
    seen: list[Message] = []
    async with open_session([ClockActor(), PerceptionActor(), dialog], mode="lockstep", taps=[seen.append]) as s:
        for at, message in inputs:
            s.schedule(message, at=at)
        await s.run_ticks(ticks)
    chunk, states, speech = -1, [], []
    for m in seen:
        if isinstance(m, InputChunk):
            chunk = m.tick
            if m.speech_prob >= 0.5:
                speech.append(m.tick)
        elif isinstance(m, DialogState):
            states.append((chunk, (m.floor, m.user, m.assistant)))
    assert not speech or speech == list(range(speech[0], speech[-1] + 1))  # one stretch of speech
    return speech, states, dialog


async def test_a_smooth_turn_ending_yields(autojump_clock, tts) -> None:
    speech, states, _ = await _session(
        [(0.4, UserAudio(pcm=tts.synthesize("Hello there, how are you doing today")))], 25
    )
    assert states == [
        (0, ("none", "yielding", "silent")),
        (speech[0] + 1, ("user", "speaking", "silent")),
        # audio without words that sounds final still waits end_of_turn: a dip between two words can sound
        # final too, and must not hand the turn over mid-utterance (tests/test_live_loop.py)
        (speech[-1] + 1, ("none", "pausing", "silent")),
        (speech[-1] + 2, ("none", "yielding", "silent")),
    ]


async def test_a_filled_pause_is_thinking_until_the_maximum(autojump_clock, tts) -> None:
    said = "I want to, um"
    inputs = [(0.4, UserAudio(pcm=tts.synthesize(said))), (0.4, UserText(text=said))]  # audio and its transcript
    speech, states, _ = await _session(inputs, 35)
    assert states[1:] == [
        (speech[0], ("user", "speaking", "silent")),  # the transcript confirms speech at once
        (speech[-1] + 1, ("user", "thinking", "silent")),
        (speech[-1] + 15, ("none", "yielding", "silent")),  # 3 s later, not before
    ]


async def test_a_question_invites(autojump_clock, tts) -> None:
    said = "Could you book a table for two at seven?"
    speech, states, _ = await _session([(0.4, UserAudio(pcm=tts.synthesize(said))), (1.0, UserText(text=said))], 20)
    assert states[-1] == (speech[-1] + 1, ("none", "inviting", "silent"))
    _, typed, _ = await _session([(0.5, UserText(text="what time is it"))], 5)  # a text console
    assert typed[1:] == [(2, ("user", "speaking", "silent")), (3, ("none", "inviting", "silent"))]


async def test_a_short_reply_over_the_assistant_is_a_backchannel(autojump_clock, tts) -> None:
    inputs = [
        (0.2, SpeechStarted(utterance_id=1, generation=1)),
        (1.0, UserAudio(pcm=tts.synthesize("yeah"))),
        (3.0, SpeechEnded(utterance_id=1, generation=1, reason="completed")),
    ]
    speech, states, dialog = await _session(inputs, 20)
    assert 2 <= len(speech) < 3  # confirmed as speech, but shorter than a barge-in
    assert [s for _, s in states] == [
        ("none", "yielding", "silent"),
        ("assistant", "yielding", "speaking"),
        ("assistant", "speaking", "speaking"),
        ("assistant", "pausing", "speaking"),
        ("none", "pausing", "silent"),
    ]
    assert (dialog.machine.backchannels, dialog.machine.interruptions) == (1, 0)


async def test_a_long_overlap_interrupts(autojump_clock, tts) -> None:
    said = "Wait, stop, I have a different question about that"
    inputs = [
        (0.2, SpeechStarted(utterance_id=1, generation=1)),
        (0.2, OutputChunk(tick=1, generation=1, text="So the first thing", controls=["speak"])),
        (1.0, UserAudio(pcm=tts.synthesize(said))),
    ]
    speech, states, dialog = await _session(inputs, 12)
    assert states[2:] == [
        (speech[1], ("assistant", "speaking", "speaking")),
        (speech[2], ("user", "interrupting", "speaking")),  # after 3 ticks (>= 0.5 s) of overlap
    ]
    assert dialog.machine.interruptions == 1 and dialog.machine.backchannels == 0


async def test_fifteen_seconds_of_silence_is_away(autojump_clock) -> None:
    _, states, _ = await _session([], 80)
    assert states == [(0, ("none", "yielding", "silent")), (74, ("none", "away", "silent"))]


def test_every_state_the_machine_produces_is_a_valid_message() -> None:
    m = DialogStateMachine()
    m.assistant_started(1, generation=1)
    for snap in _feed(m, [SPEECH] * 6 + [QUIET] * 80):
        message = DialogState(floor=snap.floor, user=snap.user, assistant=snap.assistant)
        assert decode(encode(message)) == message  # the typed decoder checks every literal



def test_a_short_request_over_the_assistant_is_a_turn_not_a_backchannel() -> None:
    def overlap(text: str) -> tuple[str, int]:
        m = DialogStateMachine()
        m.assistant_started(1, generation=1)
        states = [m.step(0.9, text), m.step(0.9), *[m.step(0.0) for _ in range(3)]]
        return states[-1].user, m.backchannels

    assert overlap("yeah") == ("pausing", 1)  # a backchannel: the assistant keeps the floor
    user, backchannels = overlap("stop please")
    assert backchannels == 0 and user != "pausing"  # a short request: the user's turn ends and is answered
