"""WAV reading and writing: round trips, the two-track stereo writer, and clear errors naming the path."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from microturn.audio import (
    AudioInputError,
    WavFormatError,
    float_to_pcm16,
    noise,
    pcm16_to_16k,
    pcm16_to_float,
    read_wav,
    tone,
    write_stereo_wav,
    write_wav,
)


def test_mono_round_trip_float_and_bytes(tmp_path: Path) -> None:
    x = tone(440, 0.5, amplitude=0.4) + noise(0.5, 0.01, seed=1)
    path = tmp_path / "mono.wav"
    write_wav(path, x)
    audio = read_wav(path)
    assert (audio.sample_rate, audio.channels) == (16000, 1)
    assert audio.pcm == float_to_pcm16(x)
    assert audio.seconds == pytest.approx(0.5)
    write_wav(tmp_path / "again.wav", audio.pcm, 16000)
    assert read_wav(tmp_path / "again.wav") == audio


def test_wav_at_another_rate_feeds_the_16k_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "48k.wav"
    write_wav(path, tone(1000, 1.0, sample_rate=48000), 48000)
    audio = read_wav(path)
    y = pcm16_to_16k(audio.pcm, audio.sample_rate, audio.channels)
    assert y.size == 16000


def test_stereo_writer_pads_the_shorter_track(tmp_path: Path) -> None:
    user = tone(300, 1.0, amplitude=0.5)
    assistant = tone(600, 0.4, amplitude=0.25)
    path = tmp_path / "session.wav"
    write_stereo_wav(path, user, assistant)
    audio = read_wav(path)
    assert (audio.sample_rate, audio.channels) == (16000, 2)
    frames = np.frombuffer(audio.pcm, "<i2").reshape(-1, 2)
    assert frames.shape == (16000, 2)
    np.testing.assert_array_equal(frames[:, 0], np.frombuffer(float_to_pcm16(user), "<i2"))
    np.testing.assert_array_equal(frames[:6400, 1], np.frombuffer(float_to_pcm16(assistant), "<i2"))
    assert (frames[6400:, 1] == 0).all()
    # Mixed down, both voices are there.
    mono = pcm16_to_float(audio.pcm, channels=2)
    assert np.abs(mono[:6400]).max() > 0.3


def test_stereo_writer_accepts_pcm_bytes_and_a_longer_right_track(tmp_path: Path) -> None:
    left = float_to_pcm16(tone(300, 0.1))
    right = float_to_pcm16(tone(500, 0.3))
    write_stereo_wav(tmp_path / "s.wav", left, right, 16000)
    frames = np.frombuffer(read_wav(tmp_path / "s.wav").pcm, "<i2").reshape(-1, 2)
    assert frames.shape == (4800, 2) and (frames[1600:, 0] == 0).all()


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(WavFormatError, match="nope.wav") as info:
        read_wav(path)
    assert isinstance(info.value, AudioInputError) and info.value.field == "path"


def test_garbage_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"this is not a wav file at all" * 10)
    with pytest.raises(WavFormatError, match="garbage.wav"):
        read_wav(path)


def test_8_bit_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "eight.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(16000)
        w.writeframes(bytes(range(256)))
    with pytest.raises(WavFormatError, match=r"eight\.wav.*8-bit"):
        read_wav(path)


def test_float_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    data = np.zeros(100, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)  # WAVE_FORMAT_IEEE_FLOAT
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(WavFormatError, match="float.wav"):
        read_wav(path)


def test_truncated_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    write_wav(path, tone(440, 0.5))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(WavFormatError, match=r"cut\.wav.*truncated"):
        read_wav(path)


def test_writer_rejects_bad_tracks(tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match="left"):
        write_stereo_wav(tmp_path / "x.wav", np.zeros((2, 2), np.float32), np.zeros(3, np.float32))
    with pytest.raises(AudioInputError, match="right"):
        write_stereo_wav(tmp_path / "x.wav", b"\0\0", b"\0")
    with pytest.raises(AudioInputError, match="sample_rate"):
        write_wav(tmp_path / "x.wav", np.zeros(3, np.float32), 12345)
