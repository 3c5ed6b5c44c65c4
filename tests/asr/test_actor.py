"""The recognizer actor in a lockstep session: espeak speech in (no transcript), RecognizedWords and UserText out."""

from __future__ import annotations

import pytest

pytest.importorskip("pocketsphinx")

from microturn.actors import ClockActor
from microturn.actors.dialog_state import DialogStateActor
from microturn.actors.perception import PerceptionActor
from microturn.asr import PocketSphinxRecognizer, RecognizerActor
from microturn.audio import Synthesizer, espeak_available
from microturn.messages import DialogState, InputChunk, Message, RecognizedWords, UserAudio, UserText
from microturn.runtime import open_session

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def tts(tmp_path_factory: pytest.TempPathFactory) -> Synthesizer:
    return Synthesizer(cache_dir=tmp_path_factory.mktemp("tts"))


@pytest.fixture
def decoder() -> PocketSphinxRecognizer:
    # one decoder per session, as a built pipeline has: pocketsphinx's noise estimate carries across
    # utterances (word times moved by 10 ms after an earlier session), so replay builds a fresh one too
    return PocketSphinxRecognizer()


async def _run(pcm: bytes, decoder: PocketSphinxRecognizer) -> list[Message]:
    seen: list[Message] = []
    actors = [ClockActor(), PerceptionActor(), DialogStateActor(), RecognizerActor(decoder)]
    async with open_session(actors, mode="lockstep", taps=[seen.append]) as s:
        s.schedule(UserAudio(pcm=pcm), at=0.6)
        await s.run_ticks(30)
    return seen


async def test_speech_without_transcript_gives_words_to_the_dialog(autojump_clock, tts, decoder) -> None:
    seen = await _run(tts.synthesize("what is the weather like today"), decoder)
    rec = [m for m in seen if isinstance(m, RecognizedWords)]
    finals = [m for m in rec if m.final]
    assert len(finals) == 1 and finals[0].utterance_id == 0
    words = [w.text for w in finals[0].words]
    assert "weather" in words
    assert all(0.0 <= w.start < w.end <= 7.0 for w in finals[0].words), finals[0].words
    assert all(not m.final for m in rec[:-1]) and rec[-1] is finals[0]  # partials come before the final
    texts = [m.text for m in seen if isinstance(m, UserText)]
    assert texts == [" ".join(words)]
    # the final text reaches perception's chunks (what the model and the dialog state read) after the final
    i = seen.index(finals[0])
    assert any(isinstance(m, InputChunk) and "weather" in m.text for m in seen[i:])
    assert any(isinstance(m, DialogState) and m.user == "speaking" for m in seen)


async def test_the_same_speech_gives_the_same_messages(autojump_clock, tts) -> None:
    pcm = tts.synthesize("i would like to order a pizza")
    runs = [
        [
            (type(m).__name__, m.stamp.tick if m.stamp else None, m)
            for m in await _run(pcm, PocketSphinxRecognizer())
            if isinstance(m, (RecognizedWords, UserText))
        ]
        for _ in range(2)
    ]
    strip = [
        [
            (n, t, m.__struct_fields__ and {f: getattr(m, f) for f in m.__struct_fields__ if f != "stamp"})
            for n, t, m in r
        ]
        for r in runs
    ]
    assert strip[0] == strip[1] and strip[0]
    assert "pizza" in strip[0][-1][2]["text"]  # the padded lead-in lets it hear the sentence


def test_the_pipeline_spec_adds_the_recognizer() -> None:
    from microturn.assembly import PipelineSpec, build_pipeline

    plain = build_pipeline(PipelineSpec(model="scripted", tools="none", background="none"))
    assert not any(isinstance(a, RecognizerActor) for a in plain)  # "none" is the default
    spec = PipelineSpec(model="scripted", tools="none", background="none", recognizer="pocketsphinx")
    assert sum(isinstance(a, RecognizerActor) for a in build_pipeline(spec)) == 1


def test_the_pipeline_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from microturn.assembly import PipelineSpec, build_pipeline
    from microturn.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(MissingExtra, match=r"'asr' extra"):
        build_pipeline(PipelineSpec(model="scripted", tools="none", background="none", recognizer="pocketsphinx"))
