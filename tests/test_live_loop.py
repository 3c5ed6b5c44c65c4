"""The whole live loop on real audio: espeak-ng speech -> perception (dMel + VAD) -> dialog state ->
interaction (scripted policy) -> output mixer, in lockstep virtual time. Every actor here is the real one."""

from __future__ import annotations

import pytest

from microturn.actors import ClockActor, DialogStateActor, InteractionActor, OutputMixer, PerceptionActor
from microturn.audio import espeak_available
from microturn.demo import speak_line
from microturn.messages import DialogState, Heard, Interrupt, Playout, SpeechEnded, SpeechStarted
from microturn.runtime import open_session

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

def say(session, text: str, at: float, *, transcript: bool = True, wpm: int = 175) -> float:
    """Schedule espeak speech in 200 ms messages from ``at`` (and its transcript); returns the end."""
    return speak_line(session, text, at, transcript=transcript, wpm=wpm)


def live_loop():
    return [ClockActor(), PerceptionActor(), DialogStateActor(), InteractionActor(), OutputMixer()]


async def test_a_spoken_turn_is_answered_then_a_spoken_barge_in_cuts_the_answer(autojump_clock):
    seen = []
    async with open_session(live_loop(), taps=[seen.append]) as session:
        end = say(session, "hello there", at=0.4)
        await session.run_for(end + 2.0)
        started = [m for m in seen if isinstance(m, SpeechStarted)]
        assert started, "the assistant never answered"
        reply_at = started[0].stamp.time
        assert reply_at - end <= 1.0  # answered within a second of the end of the user's speech
        # talk over the answer while it is being played
        barge = reply_at + 0.8
        say(session, "wait wait, stop please", at=barge, transcript=False)
        await session.run_for(4.0)
    states = [m for m in seen if isinstance(m, DialogState)]
    interrupting = next(m for m in states if m.user == "interrupting" and m.stamp.time > barge)
    cut = next(m for m in seen if isinstance(m, Interrupt))
    assert cut.stamp.time == interrupting.stamp.time  # the cut is immediate on the barge-in
    ended = next(m for m in seen if isinstance(m, SpeechEnded) and m.stamp.time >= barge)
    assert ended.reason == "interrupted"
    heard = next(m for m in seen if isinstance(m, Heard) and m.truncated)
    played_after = [
        m
        for m in seen
        if isinstance(m, Playout) and m.utterance_id == heard.utterance_id and m.stamp.time > cut.stamp.time
    ]
    assert played_after == []  # playout of the cut utterance stopped within the tick of the barge-in
    played = " ".join(m.text for m in seen if isinstance(m, Playout) and m.utterance_id == heard.utterance_id and m.text)
    assert heard.text_heard == played and heard.text_heard  # the ledger is exactly what was played
    assert len(heard.text_heard.split()) < len("Hi there! What can I do for you?".split())


async def test_a_short_spoken_backchannel_does_not_stop_the_assistant(autojump_clock):
    seen = []
    async with open_session(live_loop(), taps=[seen.append]) as session:
        end = say(session, "hello there", at=0.4)
        await session.run_for(end + 1.5)
        say(session, "yeah", at=session.clock.now() + 0.1, transcript=False, wpm=260)  # about 0.36 s
        await session.run_for(5.0)
    assert not any(isinstance(m, Interrupt) for m in seen)
    ended = [m for m in seen if isinstance(m, SpeechEnded)]
    assert ended and ended[0].reason == "completed"
    assert next(m for m in seen if isinstance(m, Heard)).truncated is False
