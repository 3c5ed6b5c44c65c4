"""dMel (docs/design.md §6): framing, filterbank, quantisation, and streaming == batch bit for bit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.audio import (
    DMEL,
    DMelStream,
    dequantize,
    dmel,
    mel_filterbank,
    noise,
    silence,
    tone,
)
from microturn.audio.dmel import (
    _hz_to_mel,
    _mel_to_hz,
    frame_magnitudes,
    mel_magnitudes,
    quantize,
)


def _reference_dmel(x: np.ndarray) -> np.ndarray:
    """The spec written the obvious way (matmul, log10, rint), to check the careful implementation against."""
    x = x.astype(np.float64)
    padded = np.concatenate([np.zeros(800), x])
    n = x.size // 800
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1600) / 1600)
    frames = np.stack([padded[i * 800 : i * 800 + 1600] for i in range(n)]) if n else np.zeros((0, 1600))
    mag = np.abs(np.fft.rfft(frames * window, n=1600, axis=1))
    mel = mag @ mel_filterbank().T
    with np.errstate(divide="ignore"):
        log = np.clip(np.log10(mel), -7.0, 2.0)
    return np.rint((log + 7.0) / 0.6).astype(np.uint8)


def _test_signal(seed: int, seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = noise(seconds, 0.05, seed=seed) + tone(float(rng.uniform(100, 7000)), seconds, amplitude=0.3)
    x[: int(rng.integers(0, 8000))] = 0.0  # a stretch of digital silence exercises the lowest level
    return x


def test_parameters_are_the_design_constants() -> None:
    assert (DMEL.sample_rate, DMEL.hop, DMEL.window, DMEL.n_fft) == (16000, 800, 1600, 1600)
    assert (DMEL.n_mels, DMEL.fmin, DMEL.fmax) == (80, 0.0, 8000.0)
    assert (DMEL.log_min, DMEL.log_max, DMEL.n_levels) == (-7.0, 2.0, 16)
    assert DMEL.frames_per_second == 20 and DMEL.history == 800


@pytest.mark.parametrize(("n", "frames"), [(0, 0), (799, 0), (800, 1), (3199, 3), (3200, 4), (16000, 20)])
def test_one_frame_per_complete_hop(n: int, frames: int) -> None:
    levels = dmel(np.zeros(n, np.float32))
    assert levels.shape == (frames, 80) and levels.dtype == np.uint8


def test_a_200ms_tick_gives_exactly_four_frames() -> None:
    assert DMelStream().push(tone(440, 0.2)).shape == (4, 80)


def test_silence_is_the_lowest_level() -> None:
    assert (dmel(silence(1.0)) == 0).all()
    assert (DMelStream().push(silence(0.2)) == 0).all()


def test_levels_stay_in_range_even_for_full_scale_noise() -> None:
    levels = dmel(np.clip(noise(1.0, 1.0, seed=1), -1, 1))
    assert levels.max() <= 15 and levels.min() >= 0
    assert levels.max() >= 10  # loud input really reaches the upper levels


def test_slaney_scale_matches_librosa_documented_values() -> None:
    # The example in librosa's docstring of mel_frequencies(n_mels=40) (Slaney scale, 0 to 11025 Hz).
    documented = [
        0.0, 85.317, 170.635, 255.952, 341.269, 426.586, 511.904, 597.221, 682.538, 767.855,
        853.173, 938.49, 1024.856, 1119.114, 1222.042, 1334.436, 1457.167, 1591.187, 1737.532, 1897.337,
        2071.84, 2262.393, 2470.47, 2697.686, 2945.799, 3216.731, 3512.582, 3835.643, 4188.417, 4573.636,
        4994.285, 5453.621, 5955.205, 6502.92, 7101.009, 7754.107, 8467.272, 9246.028, 10096.408, 11025.0,
    ]  # fmt: skip
    hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(11025.0), 40))
    np.testing.assert_allclose(hz, documented, atol=6e-4)
    np.testing.assert_allclose(_hz_to_mel(_mel_to_hz(np.linspace(0, 45, 91))), np.linspace(0, 45, 91), atol=1e-9)


def test_filterbank_shape_and_slaney_area_normalisation() -> None:
    bank = mel_filterbank()
    assert bank.shape == (80, 801)
    assert (bank >= 0).all() and (bank.max(axis=1) > 0).all()
    # Slaney normalisation: each triangle has unit area in Hz (bins are 10 Hz apart).
    np.testing.assert_allclose(bank.sum(axis=1) * 10.0, 1.0, rtol=0.02)
    # Centres rise monotonically, and the top band ends at 8 kHz.
    assert (np.diff(np.argmax(bank, axis=1)) > 0).all()
    assert bank[-1, -1] == 0.0 and bank[-1, -2] > 0


def _band_centre_hz(k: int) -> float:
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(8000.0), 82))
    return float(edges[k + 1])


@pytest.mark.parametrize("band", [3, 10, 26, 40, 60, 75])
def test_a_pure_tone_lights_its_mel_band(band: int) -> None:
    freq = round(_band_centre_hz(band) / 10) * 10  # on an FFT bin, so there is no leakage between bins
    levels = dmel(tone(freq, 0.5, amplitude=0.5))
    steady = levels[3:]
    assert (steady.argmax(axis=1) == band).all()
    assert steady[:, band].min() >= 10
    far = np.r_[0 : max(band - 5, 0), band + 6 : 80]
    assert steady[:, far].max() <= steady[:, band].min() - 6


def test_quantisation_is_nearest_level_of_clamped_log10() -> None:
    logs = np.random.default_rng(0).uniform(-9.0, 4.0, 20000)
    levels = quantize(10.0**logs)
    expected = np.rint((np.clip(logs, -7, 2) + 7) / 0.6)
    np.testing.assert_array_equal(levels, expected)
    assert quantize(np.array([0.0]))[0] == 0 and quantize(np.array([1e9]))[0] == 15


def test_dequantize_gives_the_level_values() -> None:
    values = dequantize(np.arange(16, dtype=np.uint8))
    np.testing.assert_allclose(values, np.linspace(-7, 2, 16), atol=1e-6)
    logs = np.random.default_rng(1).uniform(-7, 2, 1000)
    assert np.abs(dequantize(quantize(10.0**logs)) - logs).max() <= 0.3 + 1e-6
    with pytest.raises(ValueError):
        dequantize(np.array([16]))


@pytest.mark.parametrize("seed", range(4))
def test_batch_matches_the_naive_reference(seed: int) -> None:
    x = _test_signal(seed)
    np.testing.assert_array_equal(dmel(x), _reference_dmel(x))


def test_first_frame_sees_800_zeros_and_there_is_no_look_ahead() -> None:
    x = _test_signal(7)
    levels = dmel(x)
    # Frame i depends only on samples before (i + 1) * 800.
    for i in (0, 5, 17):
        cut = (i + 1) * 800
        changed = x.copy()
        changed[cut:] = noise((x.size - cut) / 16000, 0.3, seed=99)
        np.testing.assert_array_equal(dmel(changed)[: i + 1], levels[: i + 1])
    # ... and frame 0 is the first hop behind 800 zeros: the same as a signal that starts with that silence.
    shifted = np.concatenate([np.zeros(800, np.float32), x[:800]])
    np.testing.assert_array_equal(dmel(shifted)[1], levels[0])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), cuts=st.lists(st.integers(0, 32000), max_size=20))
def test_streaming_equals_batch_bit_for_bit(seed: int, cuts: list[int]) -> None:
    x = _test_signal(seed)
    bounds = [0, *sorted(cuts), x.size]
    stream = DMelStream()
    parts = [stream.push(x[a:b]) for a, b in itertools.pairwise(bounds)]
    np.testing.assert_array_equal(np.concatenate(parts), dmel(x))
    assert stream.frames_emitted == x.size // 800
    assert stream.pending == x.size % 800


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_streaming_speech_equals_batch_bit_for_bit(utterances: list[np.ndarray], data: st.DataObject) -> None:
    x = np.concatenate(utterances)
    cuts = data.draw(st.lists(st.integers(0, x.size), max_size=30))
    bounds = [0, *sorted(cuts), x.size]
    stream = DMelStream()
    frames = [stream.push_frames(x[a:b]) for a, b in itertools.pairwise(bounds)]
    levels = np.concatenate([f.levels for f in frames])
    np.testing.assert_array_equal(levels, dmel(x))
    np.testing.assert_array_equal(np.concatenate([f.magnitudes for f in frames]), frame_magnitudes(x))


def test_tick_sized_pushes_and_reset() -> None:
    x = _test_signal(3)
    stream = DMelStream()
    ticks = [stream.push(x[i : i + 3200]) for i in range(0, x.size, 3200)]
    assert all(t.shape == (4, 80) for t in ticks)
    np.testing.assert_array_equal(np.concatenate(ticks), dmel(x))
    stream.reset()
    np.testing.assert_array_equal(stream.push(x[:3200]), dmel(x[:3200]))


def test_frames_do_not_depend_on_their_neighbours() -> None:
    # The property that makes streaming exact: one frame alone gives the bits it gives inside a batch.
    mags = frame_magnitudes(_test_signal(11))
    batch = mel_magnitudes(mags)
    single = np.concatenate([mel_magnitudes(mags[i : i + 1]) for i in range(mags.shape[0])])
    np.testing.assert_array_equal(single, batch)


def test_bad_signal_is_refused() -> None:
    from microturn.audio import AudioInputError

    with pytest.raises(AudioInputError, match="signal"):
        dmel(np.array([0.0, np.nan], np.float32))
    with pytest.raises(AudioInputError, match="samples"):
        DMelStream().push(np.zeros((2, 2), np.float32))
