"""The recognizer actor: user audio in, ``RecognizedWords`` partials/final and the final as ``UserText`` out.

It follows perception's VAD through ``InputChunk.speech_prob``: a window at or over ``threshold`` opens an
utterance (fed with up to ``lead_in_s`` of the audio before it, which pocketsphinx needs to settle), partials are
published at most every ``partial_every`` windows, and ``end_windows`` quiet windows in a row close it: the final
``RecognizedWords`` and a ``UserText`` of its text, so the dialog state and the model hear it as a transcript.
Word times are session seconds, counted from the end of the window that opened the utterance (never negative). Decoding happens in this actor,
not in perception or the model, so it stays off their path; audio is fed once per ``partial_every`` windows.
"""

from __future__ import annotations

import numpy as np

from microturn.asr.recognizer import RATE, AudioRejected, PocketSphinxRecognizer, SpeechRecognizer, Word
from microturn.log import get_logger
from microturn.messages import InputChunk, Message, RecognizedWord, RecognizedWords, UserAudio, UserText
from microturn.runtime import Actor, Overflow, Subscribe

__all__ = ["RecognizerActor"]

log = get_logger(__name__)

MAX_BUFFER = 60 * RATE
"""At most this many samples wait for their window (older ones are dropped)."""


class RecognizerActor(Actor):
    """Streams user speech through a :class:`SpeechRecognizer` (pocketsphinx unless one is given)."""

    subscriptions = (Subscribe(UserAudio, Overflow.BLOCK), InputChunk)

    def __init__(
        self,
        recognizer: SpeechRecognizer | None = None,
        *,
        threshold: float = 0.5,
        lead_in_s: float = 0.5,
        partial_every: int = 2,
        end_windows: int = 3,
        name: str = "recognizer",
    ) -> None:
        super().__init__(name)
        self.recognizer = recognizer if recognizer is not None else PocketSphinxRecognizer()
        self.threshold = float(threshold)
        self.lead_in = int(lead_in_s * RATE)
        self.partial_every = max(1, int(partial_every))
        self.end_windows = max(1, int(end_windows))
        self.utterances = 0
        self._stream = np.zeros(0, np.int16)  # audio received, not yet covered by a perception window
        self._consumed = 0  # samples of the stream taken into windows so far
        self._recent = np.zeros(0, np.int16)  # audio not yet fed (lead-in while idle)
        self._active = False
        self._origin = 0.0  # session second of the utterance's first fed sample
        self._windows = 0
        self._window_end = 0.0
        self._quiet = 0
        self._last: tuple[Word, ...] = ()

    async def handle(self, message: Message) -> None:
        """Buffer audio; on each perception window open, feed, or close the utterance."""
        match message:
            case UserAudio(pcm=pcm, sample_rate=rate, channels=channels):
                if rate != RATE or channels != 1 or len(pcm) % 2:
                    log.warning("recognizer.rejected", field="UserAudio", sample_rate=rate, channels=channels)
                    return
                x = np.frombuffer(pcm, "<i2").astype(np.int16)
                self._stream = np.concatenate([self._stream, x])[-MAX_BUFFER:]  # bounded
            case InputChunk(tick=tick, speech_prob=prob):
                # the same window of audio perception just judged (audio arrives faster than real time too)
                n = round(self.session.clock.period * RATE)
                window, self._stream = self._stream[:n], self._stream[n:]
                self._consumed += window.size
                self._recent = np.concatenate([self._recent, window])
                if not self._active and self._recent.size > self.lead_in + window.size:
                    self._recent = self._recent[-(self.lead_in + window.size) :]
                self._window_end = (tick + 1) * self.session.clock.period
                await self._window(prob)

    async def _window(self, prob: float) -> None:
        speaking = prob >= self.threshold
        if not self._active:
            if not speaking:
                return
            self._active, self._windows, self._quiet = True, 0, 0
            if self._recent.size < self.lead_in + RATE // 5:
                # the stream began with speech: pad with the silence pocketsphinx needs before it (times are
                # still measured from the first real sample)
                pad = self.lead_in + RATE // 5 - self._recent.size
                self._recent = np.concatenate([np.zeros(pad, np.int16), self._recent])
            self._origin = self._window_end - self._recent.size / RATE
            self.recognizer.reset()
        self._windows += 1
        self._quiet = 0 if speaking else self._quiet + 1
        if self._quiet >= self.end_windows:
            await self._finish()
        elif self._windows % self.partial_every == 0:
            hyp = self._feed()
            if hyp is not None and hyp.words and hyp.words != self._last:
                self._last = hyp.words
                await self.publish(self._message(hyp.words, final=False))

    def _feed(self):  # -> Hypothesis | None
        chunk, self._recent = self._recent, np.zeros(0, np.int16)
        try:
            return self.recognizer.accept(chunk)
        except AudioRejected as exc:
            log.warning("recognizer.rejected", error=str(exc))
            return None

    async def _finish(self) -> None:
        self._feed()
        words = self.recognizer.finish().words
        uid = self.utterances
        self.utterances += 1
        self._active, self._last = False, ()
        await self.publish(self._message(words, final=True, uid=uid))
        text = " ".join(w.text for w in words)
        if text:
            await self.publish(UserText(text=text))

    def _message(self, words: tuple[Word, ...], *, final: bool, uid: int | None = None) -> RecognizedWords:
        return RecognizedWords(
            utterance_id=self.utterances if uid is None else uid,
            final=final,
            words=[
                RecognizedWord(
                    text=w.text, start=max(0.0, round(self._origin + w.start, 3)), end=round(self._origin + w.end, 3)
                )
                for w in words
            ],
        )
