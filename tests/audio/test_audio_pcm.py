"""PCM16 decoding, channel mixdown, resampling to 16 kHz, and the errors for bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.audio import (
    SUPPORTED_RATES,
    AudioInputError,
    StreamResampler,
    decode_pcm16,
    float_to_pcm16,
    pcm16_to_16k,
    pcm16_to_float,
    resample,
    tone,
)


def _dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * rate / x.size)


def test_pcm16_round_trip_is_exact() -> None:
    ints = np.arange(-32768, 32768, 7, dtype="<i2")
    x = pcm16_to_float(ints.tobytes())
    assert x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() < 1.0
    assert float_to_pcm16(x) == ints.tobytes()


def test_float_to_pcm16_clips_out_of_range_values() -> None:
    pcm = np.frombuffer(float_to_pcm16(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], np.float32)), "<i2")
    assert pcm.tolist() == [-32768, -32768, 0, 16384, 32767, 32767]


def test_stereo_is_averaged_to_mono() -> None:
    left = np.array([1000, -2000, 3000, 32767], "<i2")
    right = np.array([3000, -2000, -3000, 32767], "<i2")
    stereo = np.stack([left, right], axis=1).reshape(-1)
    mono = pcm16_to_float(stereo.tobytes(), channels=2)
    np.testing.assert_array_equal(mono, np.array([2000, -2000, 0, 32767], np.float32) / 32768)


def test_opposite_channels_cancel_and_three_channels_average() -> None:
    x = (tone(440, 0.1, amplitude=0.5) * 32767).astype("<i2")
    stereo = np.stack([x, -x], axis=1).reshape(-1)
    assert np.abs(pcm16_to_float(stereo.tobytes(), channels=2)).max() == 0.0
    three = np.stack([x, x, x], axis=1).reshape(-1)
    np.testing.assert_allclose(pcm16_to_float(three.tobytes(), channels=3), x / 32768, atol=1e-7)


@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_every_supported_rate_resamples_a_tone_to_16k(rate: int) -> None:
    seconds = 0.5
    x = tone(1000, seconds, amplitude=0.5, sample_rate=rate)
    pcm = float_to_pcm16(x)
    y = pcm16_to_16k(pcm, rate)
    assert y.dtype == np.float32
    assert abs(y.size - seconds * 16000) <= 1
    assert abs(_dominant_hz(y, 16000) - 1000) <= 16000 / y.size * 1.01
    steady = y[1000:-1000]
    assert np.sqrt(np.mean(steady**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_stereo_44k1_message_to_16k() -> None:
    left = tone(300, 0.2, amplitude=0.4, sample_rate=44100)
    right = tone(300, 0.2, amplitude=0.2, sample_rate=44100)
    pcm = float_to_pcm16(np.stack([left, right], axis=1).reshape(-1))
    y = pcm16_to_16k(pcm, 44100, channels=2)
    assert y.size == 3200
    assert np.abs(y[400:-400]).max() == pytest.approx(0.3, abs=0.01)


def test_resample_at_16k_is_a_copy() -> None:
    x = tone(500, 0.1)
    y = resample(x, 16000)
    np.testing.assert_array_equal(x, y)
    assert y is not x


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([r for r in SUPPORTED_RATES if r != 16000]),
    cuts=st.lists(st.integers(0, 9000), max_size=12),
)
def test_stream_resampler_matches_one_shot_for_any_chunking(rate: int, cuts: list[int]) -> None:
    x = np.random.default_rng(rate).standard_normal(9000).astype(np.float32) * 0.1
    bounds = [0, *sorted(cuts), x.size]
    rs = StreamResampler(rate)
    out = [rs.push(x[a:b]) for a, b in itertools.pairwise(bounds)]
    out.append(rs.flush())
    np.testing.assert_array_equal(np.concatenate(out), resample(x, rate))


def test_stream_resampler_reset_and_pcm_messages() -> None:
    x = tone(700, 0.3, sample_rate=48000)
    pcm = float_to_pcm16(x)
    rs = StreamResampler(48000)
    first = np.concatenate([rs.push_pcm16(pcm), rs.flush()])
    second = np.concatenate([rs.push_pcm16(pcm[:1000]), rs.push_pcm16(pcm[1000:]), rs.flush()])
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, resample(pcm16_to_float(pcm), 48000))


# --- errors name the field and the value --------------------------------------------------------------------


def _raises(match_field: str, match_value: str, fn, *args, **kwargs) -> AudioInputError:
    with pytest.raises(AudioInputError) as info:
        fn(*args, **kwargs)
    assert info.value.field == match_field
    assert match_field in str(info.value) and match_value in str(info.value)
    return info.value


def test_unsupported_sample_rate() -> None:
    _raises("sample_rate", "12345", decode_pcm16, b"\0\0", 12345)
    _raises("sample_rate", "True", decode_pcm16, b"\0\0", True)
    _raises("rate_in", "96000", StreamResampler, 96000)
    _raises("rate_out", "15999", resample, np.zeros(4, np.float32), 16000, 15999)


def test_odd_byte_count_and_ragged_frames() -> None:
    _raises("pcm", "3 bytes", decode_pcm16, b"\0\0\0", 16000)
    err = _raises("pcm", "3 samples", decode_pcm16, b"\0" * 6, 16000, channels=2)
    assert "channels=2" in str(err)
    _raises("channels", "0", decode_pcm16, b"\0\0", 16000, channels=0)


def test_empty_message_is_an_error_unless_allowed() -> None:
    _raises("pcm", "0 bytes", decode_pcm16, b"", 16000)
    assert decode_pcm16(b"", 16000, allow_empty=True).size == 0


def test_oversized_message() -> None:
    eleven_seconds = b"\0\0" * (11 * 8000)
    err = _raises("pcm", "11.000 s", decode_pcm16, eleven_seconds, 8000)
    assert "10 s" in str(err)
    assert decode_pcm16(eleven_seconds, 8000, max_seconds=None).size == 11 * 8000
    _raises("pcm", "2.000 s", decode_pcm16, b"\0\0" * 32000, 16000, max_seconds=1.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_input(bad: float) -> None:
    x = np.zeros(100, np.float32)
    x[37] = bad
    err = _raises("samples", "index 37", resample, x, 48000)
    assert str(bad) in str(err)
    _raises("samples", "index 37", StreamResampler(16000).push, x)
    _raises("samples", "index 37", float_to_pcm16, x)


def test_wrong_shape_or_dtype() -> None:
    _raises("samples", "shape (2, 3)", resample, np.zeros((2, 3), np.float32), 16000)
    _raises("samples", "int16", resample, np.zeros(3, np.int16), 16000)
    _raises("pcm", "str", decode_pcm16, "not bytes", 16000)
