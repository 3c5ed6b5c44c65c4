"""The recognizer protocol, audio checks, and the pocketsphinx streaming backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from microturn.extras import check
from microturn.runtime._errors import MicroturnError

__all__ = [
    "MAX_UTTERANCE_S",
    "AudioRejected",
    "Hypothesis",
    "PocketSphinxRecognizer",
    "SpeechRecognizer",
    "Word",
    "check_audio",
    "recognize",
]

RATE = 16000
"""The only sample rate the recognizer accepts (the perception stream's rate)."""

MAX_UTTERANCE_S = 60.0
"""The longest utterance one recognizer accepts; longer audio is rejected, so memory and decode time stay bounded."""

_FRAME_S = 0.01  # pocketsphinx's frame period (frate 100)
BLOCK = 1600
"""Samples fed to the decoder at a time: live cepstral normalisation updates per block it is given, so feeding
fixed blocks (whatever chunks the caller passes) makes the result independent of the caller's chunking."""
_FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "[BREATH]", "[COUGH]", "[UH]", "[UM]", "[SMACK]"}


class AudioRejected(MicroturnError, ValueError):
    """Audio the recognizer cannot take (wrong rate/dtype/shape, NaN/inf, too long); names the field and value."""


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word and its start/end in seconds from the utterance start."""

    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """A recognition result: ``final`` once the utterance ended, else a partial that may still change."""

    words: tuple[Word, ...]
    final: bool

    @property
    def text(self) -> str:
        """The words joined by spaces."""
        return " ".join(w.text for w in self.words)


@runtime_checkable
class SpeechRecognizer(Protocol):
    """A streaming recognizer of one utterance at a time."""

    def accept(self, pcm16k: np.ndarray) -> Hypothesis:
        """Feed more audio (16 kHz mono, int16 or float in [-1, 1]); return the partial hypothesis so far."""
        ...

    def finish(self) -> Hypothesis:
        """End the utterance; return the final words and get ready for the next utterance."""
        ...

    def reset(self) -> None:
        """Drop the current utterance without a result."""
        ...


def check_audio(
    pcm: object, *, rate: int = RATE, field: str = "pcm16k", max_seconds: float = MAX_UTTERANCE_S, already: int = 0
) -> np.ndarray:
    """``pcm`` as int16 samples, or :class:`AudioRejected` naming ``field`` and the bad value.

    Accepts 1-D int16, or float32/float64 in [-1, 1] (clipped); ``already`` samples of this utterance count
    towards ``max_seconds``."""
    if isinstance(rate, bool) or not isinstance(rate, int) or rate != RATE:
        raise AudioRejected(f"rate: {rate!r} Hz is not supported; the recognizer takes {RATE} Hz (resample first)")
    if not isinstance(pcm, np.ndarray):
        raise AudioRejected(f"{field}: expected a numpy array, got {type(pcm).__name__}")
    if pcm.ndim != 1:
        raise AudioRejected(f"{field}: expected mono (1-D) audio, got shape {pcm.shape}")
    if pcm.dtype == np.int16:
        samples = pcm
    elif pcm.dtype in (np.float32, np.float64):
        if not np.all(np.isfinite(pcm)):
            bad = int(np.flatnonzero(~np.isfinite(pcm))[0])
            raise AudioRejected(f"{field}: sample {bad} is {pcm[bad]!r} (NaN/inf); audio must be finite")
        samples = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)
    else:
        raise AudioRejected(f"{field}: dtype {pcm.dtype} is not supported; use int16 or float32 in [-1, 1]")
    limit = int(max_seconds * RATE)
    if already + samples.size > limit:
        raise AudioRejected(
            f"{field}: utterance would be {(already + samples.size) / RATE:.2f} s, over the {max_seconds:g} s limit"
        )
    return samples


def _decoder_class() -> Any:
    check("the speech recognizer", {"pocketsphinx": "asr"})
    import pocketsphinx  # optional extra, checked above

    return pocketsphinx.Decoder


class PocketSphinxRecognizer:
    """:class:`SpeechRecognizer` on pocketsphinx's streaming ``Decoder`` (the wheel's US-English models).

    ``lm`` is an ARPA/binary language model path (default: the wheel's general model); ``dictionary`` a pronunciation
    dictionary (default: the wheel's CMU dictionary)."""

    def __init__(
        self, *, lm: str | None = None, dictionary: str | None = None, max_seconds: float = MAX_UTTERANCE_S
    ) -> None:
        decoder = _decoder_class()
        options: dict[str, Any] = {"loglevel": "FATAL"}
        if lm is not None:
            options["lm"] = str(lm)
        if dictionary is not None:
            options["dict"] = str(dictionary)
        self._decoder = decoder(**options)
        self._max_seconds = float(max_seconds)
        self._samples = 0
        self._started = False
        self._pending = np.zeros(0, np.int16)
        # live CMN carries its estimate from one utterance to the next; restoring the initial one at every start
        # makes each utterance's result depend on its own audio only (replay and tests see the same words)
        self._cmn0 = self._decoder.get_cmn()

    def _start(self) -> None:
        if not self._started:
            self._decoder.set_cmn(self._cmn0)
            self._decoder.start_utt()
            self._started = True
            self._samples = 0
            self._pending = np.zeros(0, np.int16)

    def accept(self, pcm16k: np.ndarray) -> Hypothesis:
        """Decode ``pcm16k`` incrementally; the partial words have times from the utterance start."""
        samples = check_audio(pcm16k, max_seconds=self._max_seconds, already=self._samples if self._started else 0)
        self._start()
        if samples.size:
            self._samples += samples.size
            pending = np.concatenate([self._pending, samples])
            whole = pending.size - pending.size % BLOCK
            for i in range(0, whole, BLOCK):
                self._decoder.process_raw(pending[i : i + BLOCK].tobytes(), False, False)
            self._pending = pending[whole:].copy()
        return Hypothesis(self._words(), final=False)

    def finish(self) -> Hypothesis:
        """End the utterance (an empty one gives no words) and return the final hypothesis."""
        self._start()
        if self._pending.size:
            self._decoder.process_raw(self._pending.tobytes(), False, False)
        self._pending = np.zeros(0, np.int16)
        self._decoder.end_utt()
        self._started = False
        words = self._words()
        self._samples = 0
        return Hypothesis(words, final=True)

    def reset(self) -> None:
        """Drop the current utterance."""
        if self._started:
            self._decoder.end_utt()
        self._started = False
        self._samples = 0
        self._pending = np.zeros(0, np.int16)

    def _words(self) -> tuple[Word, ...]:
        if self._decoder.hyp() is None:
            return ()
        words = []
        for seg in self._decoder.seg():
            text = seg.word
            if text in _FILLERS or text.startswith("["):
                continue
            text = text.split("(")[0]  # alternate pronunciations are spelled word(2)
            words.append(Word(text, round(seg.start_frame * _FRAME_S, 2), round((seg.end_frame + 1) * _FRAME_S, 2)))
        return tuple(words)


def recognize(pcm: np.ndarray, rate: int = RATE, *, recognizer: SpeechRecognizer | None = None) -> tuple[Word, ...]:
    """The final words of one whole utterance (a one-call API for benchmarks)."""
    check_audio(pcm, rate=rate, field="pcm")
    rec = recognizer if recognizer is not None else PocketSphinxRecognizer()
    rec.reset()
    rec.accept(pcm)
    return rec.finish().words
