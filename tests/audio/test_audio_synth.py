"""espeak-ng synthesis and its cache, plus the deterministic test signals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from microturn.audio import (
    AudioInputError,
    SynthesisError,
    SynthesisUnavailable,
    Synthesizer,
    dmel,
    espeak_available,
    noise,
    pcm16_to_float,
    read_wav,
    silence,
    synthesize,
    tone,
)
from microturn.audio.synth import default_cache_dir

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


@needs_espeak
def test_synthesis_gives_16k_pcm16_speech(tmp_path: Path) -> None:
    synth = Synthesizer(cache_dir=tmp_path)
    pcm = synth.synthesize("The quick brown fox jumps over the lazy dog.")
    assert isinstance(pcm, bytes) and len(pcm) % 2 == 0
    x = pcm16_to_float(pcm)
    assert 1.0 < x.size / 16000 < 6.0
    assert np.sqrt(np.mean(x**2)) > 0.02
    # Speech has energy well above the lowest dMel level across many bands.
    assert (dmel(x).max(axis=0) >= 8).sum() > 40


@needs_espeak
def test_second_call_is_served_from_the_cache(tmp_path: Path) -> None:
    synth = Synthesizer(cache_dir=tmp_path)
    first = synth.synthesize("Cache me if you can.")
    assert synth.runs == 1
    path = synth.cache_path("Cache me if you can.")
    assert path.exists() and read_wav(path).pcm == first
    assert synth.synthesize("Cache me if you can.") == first
    assert synth.runs == 1
    # A fresh synthesiser over the same directory hits the disk cache too.
    other = Synthesizer(cache_dir=tmp_path)
    assert other.synthesize("Cache me if you can.") == first
    assert other.runs == 0
    # Voice and rate are part of the key.
    synth.synthesize("Cache me if you can.", voice="en+f3")
    synth.synthesize("Cache me if you can.", wpm=220)
    assert synth.runs == 3
    assert len(list(tmp_path.glob("*.wav"))) == 3


@needs_espeak
def test_cached_audio_equals_fresh_audio(tmp_path: Path) -> None:
    cached = Synthesizer(cache_dir=tmp_path)
    fresh = Synthesizer(cache_dir=tmp_path, use_cache=False)
    cached.synthesize("Same every time.")
    assert cached.synthesize("Same every time.") == fresh.synthesize("Same every time.")
    assert fresh.runs == 1 and not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


@needs_espeak
def test_a_corrupt_cache_entry_is_regenerated(tmp_path: Path) -> None:
    synth = Synthesizer(cache_dir=tmp_path)
    good = synth.synthesize("Repair me.")
    synth.cache_path("Repair me.").write_bytes(b"junk")
    assert synth.synthesize("Repair me.") == good
    assert synth.runs == 2


@needs_espeak
def test_module_level_synthesize_and_text_that_looks_like_an_option(tmp_path: Path) -> None:
    pcm = synthesize("--help is not an option here", cache_dir=tmp_path)
    assert len(pcm) > 16000


@needs_espeak
def test_unknown_voice_is_a_synthesis_error(tmp_path: Path) -> None:
    with pytest.raises(SynthesisError, match="nosuchvoice"):
        Synthesizer(cache_dir=tmp_path).synthesize("hello", voice="nosuchvoice")


def test_missing_espeak_is_reported(tmp_path: Path) -> None:
    synth = Synthesizer(cache_dir=tmp_path, executable="definitely-not-espeak-ng")
    with pytest.raises(SynthesisUnavailable, match="definitely-not-espeak-ng"):
        synth.synthesize("hello")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"text": "   "}, "text"), ({"text": "hi", "wpm": 10}, "wpm"), ({"text": "hi", "voice": "en us; rm"}, "voice")],
)
def test_bad_requests_name_the_field(tmp_path: Path, kwargs: dict, field: str) -> None:
    with pytest.raises(AudioInputError) as info:
        Synthesizer(cache_dir=tmp_path).synthesize(**kwargs)
    assert info.value.field == field


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MICROTURN_CACHE", str(tmp_path / "mt"))
    assert default_cache_dir() == tmp_path / "mt" / "tts"
    monkeypatch.delenv("MICROTURN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "microturn" / "tts"


def test_signals_are_deterministic() -> None:
    np.testing.assert_array_equal(noise(0.5, 0.1, seed=7), noise(0.5, 0.1, seed=7))
    assert not np.array_equal(noise(0.5, 0.1, seed=7), noise(0.5, 0.1, seed=8))
    assert float(np.sqrt(np.mean(noise(2.0, 0.1, seed=1) ** 2))) == pytest.approx(0.1, rel=0.02)
    x = tone(250, 1.0, amplitude=0.5)
    assert x.dtype == np.float32 and x.size == 16000 and np.abs(x).max() == pytest.approx(0.5, abs=1e-3)
    assert np.argmax(np.abs(np.fft.rfft(x))) == 250
    assert silence(0.25).size == 4000 and not silence(0.25).any()
    assert tone(100, 0.1, sample_rate=8000).size == 800


def test_signal_arguments_are_checked() -> None:
    with pytest.raises(AudioInputError, match="seconds"):
        silence(-1.0)
    with pytest.raises(AudioInputError, match="freq"):
        tone(9000, 0.1)
    with pytest.raises(AudioInputError, match="level"):
        noise(0.1, level=2.0)
    with pytest.raises(AudioInputError, match="sample_rate"):
        tone(100, 0.1, sample_rate=1234)
