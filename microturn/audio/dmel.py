"""dMel: discretised log-mel audio tokens (docs/design.md §6).

16 kHz audio, one frame per 50 ms hop (800 samples), 100 ms periodic Hann window (1600 samples), n_fft 1600,
no centring. Frame i covers the 100 ms that END at the end of hop i, so there is no look-ahead: the first frame
sees 800 zeros of history and a stream carries 800 samples across chunks. The magnitude spectrum (not power)
goes through an 80-band Slaney mel filterbank over 0-8 kHz; log10, clamped to [-7, 2], each band quantised to
the nearest of 16 evenly spaced levels -> uint8 levels 0..15, shape [frames, 80].

Bit-exactness between the batch function and the stream, whatever the chunking, is a contract (replay and
training data depend on it), so every step is computed per element in a way that cannot depend on how many
frames are processed together:

- the FFT runs row by row (pocketfft loops over rows with one plan), the magnitude is ``sqrt(re*re + im*im)``
  with correctly rounded IEEE operations;
- the filterbank is applied as a fixed-order sum over each band's non-zero bins with elementwise numpy ops,
  NOT a BLAS matmul, whose blocking (and so rounding) changes with the number of rows;
- quantisation compares the mel magnitude with the 15 level boundaries ``10**(level midpoint)`` instead of
  calling log10, whose SIMD and scalar code paths may differ in the last bit. It is the same "nearest level"
  up to values within one ulp of a boundary (ties go up).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from microturn.audio.resample import as_mono_float

__all__ = [
    "DMEL",
    "DMelFrames",
    "DMelParams",
    "DMelStream",
    "dequantize",
    "dmel",
    "frame_magnitudes",
    "hann_window",
    "levels_from_magnitudes",
    "mel_filterbank",
    "mel_magnitudes",
    "quantize",
]

# Frames are processed in blocks of this many so a long signal never builds a huge temporary; the block size
# cannot change the bits (see the module docstring).
_BATCH_BLOCK = 256


@dataclass(frozen=True)
class DMelParams:
    """The dMel constants. The defaults are the project's tokenizer; change them only for experiments."""

    sample_rate: int = 16000
    hop: int = 800
    window: int = 1600
    n_fft: int = 1600
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    log_min: float = -7.0
    log_max: float = 2.0
    n_levels: int = 16

    def __post_init__(self) -> None:
        if not 0 < self.hop <= self.window <= self.n_fft:
            raise ValueError(f"need 0 < hop <= window <= n_fft, got {self.hop}, {self.window}, {self.n_fft}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}, {self.fmax}")
        if self.n_mels < 1 or not 2 <= self.n_levels <= 256 or not self.log_min < self.log_max:
            raise ValueError("need n_mels >= 1, 2 <= n_levels <= 256 and log_min < log_max")

    @property
    def n_bins(self) -> int:
        """Number of rfft bins (n_fft // 2 + 1)."""
        return self.n_fft // 2 + 1

    @property
    def history(self) -> int:
        """Samples of past audio each frame sees before its own hop (window - hop)."""
        return self.window - self.hop

    @property
    def frames_per_second(self) -> float:
        """Frames per second of audio (20 for the defaults)."""
        return self.sample_rate / self.hop

    @property
    def level_step(self) -> float:
        """log10 distance between neighbouring levels (0.6 for the defaults)."""
        return (self.log_max - self.log_min) / (self.n_levels - 1)


#: The project's dMel parameters.
DMEL = DMelParams()


class DMelFrames(NamedTuple):
    """dMel levels together with the magnitude spectra they were computed from (for the VAD)."""

    levels: np.ndarray  # uint8 [frames, n_mels]
    magnitudes: np.ndarray  # float64 [frames, n_bins]


@lru_cache(maxsize=8)
def hann_window(params: DMelParams = DMEL) -> np.ndarray:
    """Periodic Hann window of ``params.window`` samples (float64, read-only)."""
    n = np.arange(params.window, dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / params.window)
    w.flags.writeable = False
    return w


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's Auditory Toolbox scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    lin = hz / (200.0 / 3.0)
    logstep = np.log(6.4) / 27.0
    with np.errstate(divide="ignore"):
        log = 15.0 + np.log(np.maximum(hz, 1e-300) / 1000.0) / logstep
    return np.where(hz >= 1000.0, log, lin)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    lin = mel * (200.0 / 3.0)
    logstep = np.log(6.4) / 27.0
    log = 1000.0 * np.exp(logstep * (mel - 15.0))
    return np.where(mel >= 15.0, log, lin)


@lru_cache(maxsize=8)
def mel_filterbank(params: DMelParams = DMEL) -> np.ndarray:
    """Slaney-style mel filterbank, shape [n_mels, n_bins], float64, read-only.

    The same construction as ``librosa.filters.mel(htk=False, norm="slaney")``: triangles between mel-spaced
    edges (n_mels + 2 points from fmin to fmax on the Slaney scale), each scaled by 2 / (its width in Hz) so
    every band has unit area in Hz. Written out in numpy because librosa is not a dependency.
    """
    fft_hz = np.linspace(0.0, params.sample_rate / 2, params.n_bins)
    edges_mel = np.linspace(_hz_to_mel(params.fmin), _hz_to_mel(params.fmax), params.n_mels + 2)
    edges_hz = _mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    bank = np.maximum(0.0, np.minimum(lower, upper))
    bank *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    bank.flags.writeable = False
    return bank


class _SparseBank(NamedTuple):
    index: np.ndarray  # intp [n_mels, width]: bin indices of each band's support, padded
    weight: np.ndarray  # float64 [n_mels, width]: the filter weights there, 0.0 in the padding


@lru_cache(maxsize=8)
def _sparse_bank(params: DMelParams) -> _SparseBank:
    bank = mel_filterbank(params)
    nz = bank > 0
    starts = np.where(nz.any(axis=1), nz.argmax(axis=1), 0)
    stops = np.where(nz.any(axis=1), params.n_bins - nz[:, ::-1].argmax(axis=1), 0)
    width = max(1, int((stops - starts).max()))
    index = np.minimum(starts[:, None] + np.arange(width)[None, :], params.n_bins - 1)
    inside = np.arange(width)[None, :] < (stops - starts)[:, None]
    weight = np.where(inside, bank[np.arange(len(bank))[:, None], index], 0.0)
    return _SparseBank(index, weight)


@lru_cache(maxsize=8)
def _boundaries(params: DMelParams) -> np.ndarray:
    # Level k wins for log10(m) in [mid(k-1, k), mid(k, k+1)); compare m with 10**mid instead of taking log10.
    mids = params.log_min + params.level_step * (np.arange(params.n_levels - 1) + 0.5)
    return 10.0**mids


def _magnitudes_of(frames: np.ndarray, params: DMelParams) -> np.ndarray:
    spec = np.fft.rfft(frames * hann_window(params), n=params.n_fft, axis=-1)
    re, im = spec.real, spec.imag
    return np.sqrt(re * re + im * im)


def _magnitudes_blocked(frames: np.ndarray, params: DMelParams) -> np.ndarray:
    out = np.empty((frames.shape[0], params.n_bins))
    for start in range(0, frames.shape[0], _BATCH_BLOCK):
        out[start : start + _BATCH_BLOCK] = _magnitudes_of(frames[start : start + _BATCH_BLOCK], params)
    return out


def _framed(padded: np.ndarray, n_frames: int, params: DMelParams) -> np.ndarray:
    # Frame i is padded[i*hop : i*hop + window], i.e. the window ending at the end of hop i.
    if n_frames == 0:
        return np.zeros((0, params.window))
    view = np.lib.stride_tricks.sliding_window_view(padded, params.window)[:: params.hop]
    return view[:n_frames]


def frame_magnitudes(signal: np.ndarray, params: DMelParams = DMEL) -> np.ndarray:
    """Magnitude spectra [frames, n_bins] (float64) of every complete hop of a whole 16 kHz float signal."""
    x = as_mono_float(signal, field="signal").astype(np.float64)
    n_frames = x.size // params.hop
    padded = np.concatenate([np.zeros(params.history), x[: n_frames * params.hop]])
    return _magnitudes_blocked(_framed(padded, n_frames, params), params)


def mel_magnitudes(magnitudes: np.ndarray, params: DMelParams = DMEL) -> np.ndarray:
    """Apply the mel filterbank to magnitude spectra [frames, n_bins] -> [frames, n_mels] (float64).

    A fixed-order sum over each band's bins, so a frame's result does not depend on its neighbours.
    """
    mag = np.asarray(magnitudes, dtype=np.float64)
    if mag.ndim != 2 or mag.shape[1] != params.n_bins:
        raise ValueError(f"magnitudes must have shape [frames, {params.n_bins}], got {mag.shape}")
    sparse = _sparse_bank(params)
    out = np.empty((mag.shape[0], params.n_mels))
    for start in range(0, mag.shape[0], _BATCH_BLOCK):
        block = mag[start : start + _BATCH_BLOCK]
        terms = block[:, sparse.index] * sparse.weight  # [frames, n_mels, width]
        acc = terms[:, :, 0].copy()
        for k in range(1, terms.shape[2]):
            acc += terms[:, :, k]
        out[start : start + _BATCH_BLOCK] = acc
    return out


def quantize(mel: np.ndarray, params: DMelParams = DMEL) -> np.ndarray:
    """Quantise linear mel magnitudes to uint8 levels: nearest level of log10 clamped to [log_min, log_max]."""
    return np.searchsorted(_boundaries(params), np.asarray(mel, dtype=np.float64), side="right").astype(np.uint8)


def dequantize(levels: np.ndarray, params: DMelParams = DMEL) -> np.ndarray:
    """Map levels back to the log10 mel magnitude each one stands for (float32), for plots and debugging."""
    lv = np.asarray(levels)
    if lv.size and (lv.min() < 0 or lv.max() >= params.n_levels):
        raise ValueError(f"levels must lie in 0..{params.n_levels - 1}")
    return (params.log_min + params.level_step * lv.astype(np.float64)).astype(np.float32)


def unit_from_mel(mel: np.ndarray, params: DMelParams = DMEL) -> np.ndarray:
    """Linear mel magnitudes -> log10 clamped to [log_min, log_max], scaled to [-1, 1] (float32): the continuous
    frames the model's flow head generates."""
    log = np.log10(np.maximum(np.asarray(mel, dtype=np.float64), 10.0**params.log_min))
    mid, half = (params.log_max + params.log_min) / 2, (params.log_max - params.log_min) / 2
    return ((np.clip(log, params.log_min, params.log_max) - mid) / half).astype(np.float32)


def levels_from_unit(unit: np.ndarray, params: DMelParams = DMEL) -> np.ndarray:
    """Frames on the [-1, 1] scale of :func:`unit_from_mel` -> the nearest dMel levels (uint8)."""
    mid, half = (params.log_max + params.log_min) / 2, (params.log_max - params.log_min) / 2
    log = np.clip(np.asarray(unit, dtype=np.float64), -1.0, 1.0) * half + mid
    return np.rint((log - params.log_min) / params.level_step).astype(np.uint8)


def levels_from_magnitudes(magnitudes: np.ndarray, params: DMelParams = DMEL) -> np.ndarray:
    """dMel levels [frames, n_mels] (uint8) from magnitude spectra [frames, n_bins]."""
    return quantize(mel_magnitudes(magnitudes, params), params)


def dmel(signal_16k: np.ndarray, params: DMelParams = DMEL) -> np.ndarray:
    """dMel levels [frames, n_mels] (uint8, 0..15) of a whole 16 kHz float signal, one frame per complete hop.

    The signal is taken to start at the start of a stream: the first frame sees ``history`` zeros before it.
    """
    return levels_from_magnitudes(frame_magnitudes(signal_16k, params), params)


class DMelStream:
    """Streaming dMel: push 16 kHz float samples in chunks of any length, get the frames of completed hops.

    Carries the window history and any partial hop across calls; the concatenated output is bit-for-bit
    ``dmel`` of the concatenated input.
    """

    def __init__(self, params: DMelParams = DMEL) -> None:
        self.params = params
        self.reset()

    def reset(self) -> None:
        """Start a new stream (history back to zeros, no partial hop, frame count 0)."""
        self._buf = np.zeros(self.params.history)
        self.frames_emitted = 0

    @property
    def pending(self) -> int:
        """Samples of the current, incomplete hop held back for the next push."""
        return self._buf.size - self.params.history

    def push_magnitudes(self, samples: np.ndarray) -> np.ndarray:
        """Feed samples; return only the magnitude spectra [new_frames, n_bins] of completed hops (no levels)."""
        p = self.params
        x = as_mono_float(samples).astype(np.float64)
        buf = np.concatenate([self._buf, x]) if x.size else self._buf
        n_frames = (buf.size - p.history) // p.hop
        if n_frames == 0:
            self._buf = buf
            return np.zeros((0, p.n_bins))
        mags = _magnitudes_blocked(_framed(buf, n_frames, p), p)
        self._buf = buf[n_frames * p.hop :].copy()
        self.frames_emitted += n_frames
        return mags

    def push_frames(self, samples: np.ndarray) -> DMelFrames:
        """Like ``push`` but also returns the magnitude spectra of the new frames (to share with a VAD)."""
        mags = self.push_magnitudes(samples)
        return DMelFrames(levels_from_magnitudes(mags, self.params), mags)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed float32 samples; return uint8 levels [new_frames, n_mels] for every hop completed by them."""
        return self.push_frames(samples).levels
