"""The pocketsphinx recognizer on real espeak-ng speech: words, times, partials, chunking, bad audio, the extra."""

from __future__ import annotations

import sys
from functools import cache, lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("pocketsphinx")

import itertools

from microturn.asr import AudioRejected, PocketSphinxRecognizer, SpeechRecognizer, recognize
from microturn.audio.synth import espeak_available, synthesize
from microturn.extras import MissingExtra

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

WEATHER = "what is the weather like today"
PIZZA = "i would like to order a pizza"


@cache
def speech(text: str, voice: str = "en-us", wpm: int = 175) -> np.ndarray:
    """espeak-ng speech of ``text`` with 0.5 s of silence each side, as a VAD segment has (cached)."""
    pad = np.zeros(8000, np.int16)
    return np.concatenate([pad, np.frombuffer(synthesize(text, voice=voice, wpm=wpm), np.int16), pad])


@lru_cache(maxsize=1)
def shared() -> PocketSphinxRecognizer:
    """One decoder for the module: loading the models is the slow part."""
    return PocketSphinxRecognizer()


def test_is_a_speech_recognizer() -> None:
    assert isinstance(shared(), SpeechRecognizer)


@needs_espeak
@pytest.mark.parametrize(("text", "key"), [(WEATHER, "weather"), (PIZZA, "pizza")])
def test_recognises_key_words_with_ordered_times(text: str, key: str) -> None:
    pcm = speech(text)
    words = recognize(pcm, recognizer=shared())
    assert key in [w.text for w in words]
    duration = pcm.size / 16000
    for w in words:
        assert 0.0 <= w.start < w.end <= duration + 0.02
    for a, b in itertools.pairwise(words):
        assert a.end <= b.start + 1e-9


@needs_espeak
def test_an_utterance_does_not_depend_on_the_one_before() -> None:
    rec = shared()
    first = recognize(speech(WEATHER), recognizer=rec)
    recognize(speech(PIZZA, "en-gb", 150), recognizer=rec)
    assert recognize(speech(WEATHER), recognizer=rec) == first


@needs_espeak
@settings(max_examples=8, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(min_value=1, max_value=6000), min_size=1, max_size=12))
def test_final_words_do_not_depend_on_chunking(sizes: list[int]) -> None:
    pcm = speech(WEATHER)
    whole = recognize(pcm, recognizer=shared())
    rec = shared()
    rec.reset()
    i = 0
    k = 0
    while i < pcm.size:
        n = sizes[k % len(sizes)]
        rec.accept(pcm[i : i + n])
        i += n
        k += 1
    assert rec.finish().words == whole


@needs_espeak
def test_partials_stabilise_and_final_equals_the_whole_decode() -> None:
    pcm = speech(PIZZA)
    rec = shared()
    rec.reset()
    partials = [rec.accept(pcm[i : i + 3200]) for i in range(0, pcm.size, 3200)]
    final = rec.finish()
    assert final.final and not any(p.final for p in partials)
    assert final.words == recognize(pcm, recognizer=rec)
    texts = [p.text for p in partials if p.words]
    assert texts, "no partial hypothesis at all"
    # most later partials keep the earlier one's first word
    kept = sum(b.split()[0] == a.split()[0] for a, b in itertools.pairwise(texts))
    assert kept >= (len(texts) - 1) // 2


@pytest.mark.parametrize(
    ("pcm", "rate", "needle"),
    [
        (np.array([0.0, np.nan, 0.1], np.float32), 16000, "sample 1"),
        (np.array([0.0, np.inf], np.float64), 16000, "NaN/inf"),
        (np.zeros(10, np.int32), 16000, "dtype int32"),
        (np.zeros((2, 10), np.int16), 16000, "shape (2, 10)"),
        ([0, 1, 2], 16000, "got list"),
        (np.zeros(10, np.int16), 8000, "rate: 8000"),
        (np.zeros(61 * 16000, np.int16), 16000, "60 s limit"),
    ],
)
def test_bad_audio_is_rejected_by_name_and_the_recognizer_goes_on(pcm: object, rate: int, needle: str) -> None:
    rec = shared()
    rec.reset()
    with pytest.raises(AudioRejected) as info:
        recognize(pcm, rate, recognizer=rec)  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert str(info.value).startswith("rate:" if rate != 16000 else "pcm:")
    if rate == 16000:
        with pytest.raises(AudioRejected, match="^pcm16k:"):
            rec.accept(pcm)  # type: ignore[arg-type]
    # the rejected audio is not half-fed: the recognizer goes on with the next audio
    assert rec.accept(np.zeros(1600, np.int16)).final is False
    assert rec.finish().final


def test_empty_audio_gives_no_words() -> None:
    assert recognize(np.zeros(0, np.int16), recognizer=shared()) == ()
    assert shared().finish().words == ()


def test_too_long_counts_across_chunks() -> None:
    rec = PocketSphinxRecognizer(max_seconds=1.0)
    rec.accept(np.zeros(12000, np.int16))
    with pytest.raises(AudioRejected, match="over the 1 s limit"):
        rec.accept(np.zeros(6000, np.int16))
    rec.reset()
    rec.accept(np.zeros(12000, np.int16))  # a new utterance starts from zero


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(MissingExtra, match=r"'asr' extra: pip install 'microturn\[asr\]'"):
        PocketSphinxRecognizer()
