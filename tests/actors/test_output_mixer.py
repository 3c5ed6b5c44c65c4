"""The output mixer on its own, in virtual time: pacing, the Heard ledger, barge-in cuts, speech and the WAV."""

from __future__ import annotations

import numpy as np
import pytest

from microturn.actors.clock import ClockActor
from microturn.actors.output_mixer import OutputMixer
from microturn.audio import Synthesizer, espeak_available, read_wav, tone
from microturn.audio.pcm import float_to_pcm16
from microturn.messages import Heard, Interrupt, Message, OutputChunk, Playout, SpeechStarted, UserAudio
from microturn.runtime import open_session

P = 0.2  # tick period


def say(session, at: float, uid: int, gen: int, words: list[str], *, end: bool = True) -> None:
    """Schedule utterance ``uid``: its start, then one OutputChunk per tick, as the interaction actor would."""
    session.schedule(SpeechStarted(utterance_id=uid, generation=gen), at=at)
    for i, word in enumerate(words):
        last = end and i == len(words) - 1
        controls = ["speak", "end_utterance"] if last else ["speak"]
        tick = round(at / P) + i
        session.schedule(OutputChunk(tick=tick, generation=gen, text=word, controls=controls), at=at + i * P)


def of(log: list[Message], cls: type) -> list:
    return [m for m in log if isinstance(m, cls)]


async def run(mixer: OutputMixer, ticks: int, script) -> list[Message]:
    log: list[Message] = []
    async with open_session([ClockActor(), mixer], taps=[log.append]) as session:
        script(session)
        await session.run_ticks(ticks)
    return log


async def test_paces_words_at_the_speaking_rate_and_reports_what_was_heard(autojump_clock) -> None:
    words = ["one", "two", "three", "four"]
    log = await run(OutputMixer(), 20, lambda s: say(s, 1.0, 1, 1, words))
    plays = of(log, Playout)
    assert [(p.tick, p.text) for p in plays] == [
        (5, "one"),
        (6, ""),
        (7, "two"),
        (8, ""),
        (9, "three"),
        (10, ""),
        (11, "four"),
        (12, ""),
    ]
    assert all(p.utterance_id == 1 and p.pcm == b"" for p in plays)
    (heard,) = of(log, Heard)
    assert heard == Heard(utterance_id=1, text_heard="one two three four", truncated=False, stamp=heard.stamp)
    assert heard.stamp.tick == 13  # published at the end of the last word's slot (Tick 12)


async def test_faster_rates_play_several_words_per_window(autojump_clock) -> None:
    def script(s) -> None:
        s.schedule(SpeechStarted(utterance_id=1, generation=1), at=1.0)
        s.schedule(OutputChunk(tick=5, generation=1, text="a b c d e", controls=["speak", "end_utterance"]), at=1.0)

    log = await run(OutputMixer(words_per_tick=2), 12, script)
    assert [(p.tick, p.text) for p in of(log, Playout)] == [(5, "a b"), (6, "c d"), (7, "e")]
    assert of(log, Heard)[0].text_heard == "a b c d e"


async def test_a_barge_in_stops_playout_within_the_tick_and_the_ledger_is_exact(autojump_clock) -> None:
    def script(s) -> None:
        say(s, 1.0, 1, 1, ["please", "let", "me", "tell", "you", "about", "the", "weather"])
        s.schedule(Interrupt(generation=1, reason="user_interrupting"), at=2.0)

    mixer = OutputMixer()
    log = await run(mixer, 30, script)
    plays = of(log, Playout)
    assert max(p.tick for p in plays) == 9  # Tick 9 ends at 2.0, before the interrupt; window 10 is silent
    (heard,) = of(log, Heard)
    played = " ".join(p.text for p in plays if p.text)
    assert heard.truncated and heard.text_heard == played == "please let me"
    assert mixer.stale == 2  # "the" and "weather" arrived after the cut


async def test_pause_holds_the_utterance_in_place_and_resume_plays_on_from_there(autojump_clock) -> None:
    def script(s) -> None:
        say(s, 1.0, 1, 1, ["one", "two", "three", "four"])
        s.schedule(OutputChunk(tick=8, generation=1, controls=["pause"]), at=1.5)  # after Tick 6 (ends 1.4)
        s.schedule(OutputChunk(tick=9, generation=1, controls=["pause"]), at=1.7)  # repeated: still held
        s.schedule(OutputChunk(tick=11, generation=1, controls=["resume", "speak"]), at=2.1)

    log = await run(OutputMixer(), 24, script)
    # windows 7-9 are held: nothing plays and no Playout goes out; then the utterance goes on where it was
    assert [(p.tick, p.text) for p in of(log, Playout)] == [
        (5, "one"), (6, ""), (10, "two"), (11, ""), (12, "three"), (13, ""), (14, "four"), (15, ""),
    ]
    (heard,) = of(log, Heard)
    assert (heard.text_heard, heard.truncated) == ("one two three four", False)


async def test_a_cut_while_paused_reports_only_what_played_before_the_pause(autojump_clock) -> None:
    def script(s) -> None:
        say(s, 1.0, 1, 1, ["one", "two", "three", "four"])
        s.schedule(OutputChunk(tick=7, generation=1, controls=["pause"]), at=1.3)  # before window 6 plays
        s.schedule(Interrupt(generation=1, reason="user_interrupting"), at=1.9)
        say(s, 2.5, 2, 2, ["next"])  # a later generation is not held by the old pause

    mixer = OutputMixer()
    log = await run(mixer, 20, script)
    assert [(p.tick, p.utterance_id, p.text) for p in of(log, Playout)] == [(5, 1, "one"), (12, 2, "next"), (13, 2, "")]
    assert [(h.utterance_id, h.text_heard, h.truncated) for h in of(log, Heard)] == [(1, "one", True), (2, "next", False)]
    assert mixer.paused is None


async def test_stale_output_is_discarded_and_newer_generations_play(autojump_clock) -> None:
    mixer = OutputMixer()

    def script(s) -> None:
        say(s, 1.0, 1, 1, ["old", "words", "that", "never", "end"], end=False)
        s.schedule(Interrupt(generation=1), at=1.3)
        say(s, 2.0, 2, 3, ["new"])

    log = await run(mixer, 20, script)
    texts = [p.text for p in of(log, Playout) if p.text]
    assert texts == ["old", "new"]
    assert [(h.utterance_id, h.text_heard, h.truncated) for h in of(log, Heard)] == [
        (1, "old", True),
        (2, "new", False),
    ]
    assert mixer.stale == 3 and mixer.ledger == of(log, Heard)


async def test_an_utterance_cut_before_its_first_word_was_not_heard(autojump_clock) -> None:
    def script(s) -> None:
        s.schedule(SpeechStarted(utterance_id=4, generation=2), at=1.0)
        s.schedule(Interrupt(generation=2), at=1.0)

    log = await run(OutputMixer(), 10, script)
    assert of(log, Playout) == []
    assert [(h.utterance_id, h.text_heard, h.truncated) for h in of(log, Heard)] == [(4, "", True)]


async def test_utterances_play_one_after_another_and_late_words_start_on_arrival(autojump_clock) -> None:
    def script(s) -> None:
        say(s, 1.0, 1, 1, ["first"])
        say(s, 1.0, 2, 2, ["second"])
        s.schedule(SpeechStarted(utterance_id=3, generation=3), at=3.0)
        s.schedule(OutputChunk(tick=15, generation=3, text="slow"), at=3.0)
        s.schedule(OutputChunk(tick=21, generation=3, text="model", controls=["end_utterance"]), at=4.2)

    log = await run(OutputMixer(), 30, script)
    assert [(p.tick, p.utterance_id, p.text) for p in of(log, Playout) if p.text] == [
        (5, 1, "first"),
        (7, 2, "second"),
        (15, 3, "slow"),
        (21, 3, "model"),
    ]
    assert [h.text_heard for h in of(log, Heard)] == ["first", "second", "slow model"]


def test_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="words_per_tick"):
        OutputMixer(words_per_tick=0)


needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


@needs_espeak
async def test_renders_speech_aligned_with_the_words(autojump_clock, tmp_path) -> None:
    mixer = OutputMixer(render_audio=True, synthesizer=Synthesizer(cache_dir=tmp_path / "tts"))
    log = await run(mixer, 16, lambda s: say(s, 1.0, 1, 1, ["hello", "world"]))
    plays = of(log, Playout)
    assert all(len(p.pcm) == 2 * 3200 and p.sample_rate == 16000 for p in plays)
    starts = [np.frombuffer(p.pcm, dtype="<i2") for p in plays if p.text]
    assert len(starts) == 2 and all(rms(x) > 300 for x in starts)


@needs_espeak
async def test_writes_the_session_as_a_stereo_wav(autojump_clock, tmp_path) -> None:
    path = tmp_path / "session.wav"
    mixer = OutputMixer(render_audio=True, synthesizer=Synthesizer(cache_dir=tmp_path / "tts"), wav_path=path)
    user = float_to_pcm16(tone(440.0, 0.4, amplitude=0.5, sample_rate=8000))

    def script(s) -> None:
        s.schedule(UserAudio(pcm=user, sample_rate=8000), at=0.2)
        say(s, 1.0, 1, 1, ["good", "morning", "to", "you"])

    log = await run(mixer, 20, script)
    wav = read_wav(path)
    assert (wav.channels, wav.sample_rate) == (2, 16000)
    frames = np.frombuffer(wav.pcm, dtype="<i2").reshape(-1, 2)
    left, right = frames[:, 0], frames[:, 1]
    assert rms(left[3200:9600]) > 1000 and rms(left[16000:]) == 0.0  # the tone at 0.2-0.6 s, then nothing
    assert rms(right[:16000]) == 0.0  # the assistant is silent before 1.0 s
    for p in of(log, Playout):
        window = right[p.tick * 3200 : (p.tick + 1) * 3200]
        assert np.array_equal(window, np.frombuffer(p.pcm, dtype="<i2"))
        if p.text:
            assert rms(window) > 300
