"""Float audio outside [-1, 1), NaN, infinity and things that are not audio at all, pushed into perception:
finite samples are clipped (counted, logged), the rest is refused (counted, logged), and nothing raises."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from microturn.actors.perception import PerceptionActor
from microturn.audio import AudioInputError, StreamResampler
from microturn.audio.pcm import FLOAT_MAX, clip_to_range
from microturn.audio.resample import as_mono_float
from microturn.runtime import capture_logs

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)

FINITE = hnp.arrays(
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
    shape=st.integers(1, 4000),
    elements=st.floats(-60000, 60000, allow_nan=False, allow_infinity=False, width=16),
)


@SETTINGS
@given(samples=FINITE, scale=st.sampled_from([1.0, 1e3, 1e30]), rate=st.sampled_from([16000, 48000, 8000]))
def test_finite_samples_are_clipped_counted_and_kept(samples, scale: float, rate: int) -> None:
    x = samples.astype(np.float64) * scale
    x = np.where(np.isfinite(x), x, 0.0)
    perception = PerceptionActor()
    with capture_logs("debug") as logs:
        assert perception.push_samples(x, rate) is True
    out = int(np.count_nonzero((x < -1) | (x > FLOAT_MAX)))
    assert perception.clipped_samples == out and perception.rejected == 0
    assert [e["samples"] for e in logs if e["event"] == "input_clipped"] == ([out] if out else [])
    chunk = perception.close_window(0)
    assert np.isfinite(chunk.speech_prob) and chunk.n_frames == 4


@SETTINGS
@given(sign=st.sampled_from([-1.0, 1.0]), exponent=st.integers(0, 300), dtype=st.sampled_from([np.float32, np.float64]))
def test_a_huge_signal_sounds_like_a_full_scale_one(sign: float, exponent: int, dtype) -> None:
    """Clipping happens before any cast to float32, so 1e300 is full scale, not infinity."""
    exponent = min(exponent, 38) if dtype is np.float32 else exponent
    huge = np.full(3200, sign * 1.5 * 10.0**exponent, dtype)
    full = np.full(3200, FLOAT_MAX if sign > 0 else -1.0, np.float32)
    a, b = PerceptionActor(), PerceptionActor()
    assert a.push_samples(huge, 16000) and b.push_samples(full, 16000)
    assert a.close_window(0).dmel == b.close_window(0).dmel


BAD = st.one_of(
    st.just([[0.1], [0.1, 0.2]]),  # ragged
    st.just("not audio"),
    st.none(),
    st.just({"samples": [0.0]}),
    st.just(np.zeros((2, 100), np.float32)),
    st.just(np.zeros(100, np.complex64)),
    st.just(np.array([object(), object()])),
    hnp.arrays(np.float32, st.integers(1, 500), elements=st.sampled_from([0.0, 0.5, np.nan, np.inf, -np.inf]))
    .filter(lambda a: not np.isfinite(a).all()),
)


@SETTINGS
@given(bad=BAD, rate=st.sampled_from([16000, 44100]))
def test_bad_input_is_counted_and_logged_never_raised(bad, rate: int) -> None:
    perception = PerceptionActor()
    assert perception.push_samples(np.full(800, 0.25, np.float32), 16000)
    buffered = perception._buffered
    with capture_logs("debug") as logs:
        assert perception.push_samples(bad, rate) is False
    assert perception.rejected == 1 and perception._buffered == buffered  # what was accepted is untouched
    (event,) = [e for e in logs if e["event"] == "input_rejected"]
    assert event["field"] == "samples" and event["value"]


def test_nan_is_refused_the_same_way_on_every_float_path() -> None:
    bad = np.array([0.0, np.nan], np.float32)
    with pytest.raises(AudioInputError, match="finite"):
        as_mono_float(bad)
    with pytest.raises(AudioInputError, match="finite"):
        StreamResampler(48000).push(bad)
    perception = PerceptionActor()
    assert perception.push_samples(bad, 48000) is False and perception.rejected == 1


def test_a_float64_beyond_float32_is_an_input_error_not_infinity() -> None:
    with pytest.raises(AudioInputError, match=r"samples='1e\+300 at index 0': beyond float32's range"):
        as_mono_float(np.array([1e300, 0.0]))
    with pytest.raises(AudioInputError, match="not an array of samples"):
        StreamResampler(16000).push([[0.0], [0.0, 0.0]])


@SETTINGS
@given(samples=FINITE, scale=st.sampled_from([1.0, 1e-4, 1e300]))
def test_clip_to_range_bounds_and_counts(samples, scale: float) -> None:
    samples = samples.astype(np.float64) * scale
    clipped, count = clip_to_range(samples)
    assert clipped.dtype == np.float32 and np.isfinite(clipped).all()
    assert clipped.min(initial=0.0) >= -1.0 and clipped.max(initial=0.0) <= FLOAT_MAX
    assert count == int(np.count_nonzero((samples < -1) | (samples > FLOAT_MAX)))
