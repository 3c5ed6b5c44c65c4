"""The output mixer: paces the assistant's words into what the user hears, tick by tick, and keeps the ledger.

Protocol:

- ``SpeechStarted(u, g)`` queues utterance ``u``; the words of each following ``OutputChunk`` of generation ``g``
  join it, and ``end_utterance`` marks it complete. Utterances play one after another, never over each other.
- On ``Tick(j)`` (the end of window j) the mixer publishes ``Playout(tick=j, utterance_id=u, text, pcm)``: the
  words that started in window j and that window's audio. Each word takes one slot of ``1 / words_per_tick``
  ticks (default 0.5 words per 200 ms tick = 150 words per minute); a Playout goes out for every window in
  which a word of ``u`` sounds, with empty text between word starts, and none while nothing plays. A word that
  arrives late (the model slower than the speaking rate) starts in the window it arrives.
- When a complete utterance's last slot has played: ``Heard(u, text_heard=<all its words>, truncated=False)``.
- An ``OutputChunk`` of generation ``g`` whose controls hold ``pause`` holds the playout of generation ``g`` (and
  older) where it is: from the next window on nothing of it plays and no Playout goes out, its unplayed words
  wait, and its clock stands still (a word cut half-way by the pause plays its remaining slot on resume). One
  holding ``resume`` plays on from there. This is how the assistant stops within a tick of the user starting to
  speak over it without losing its place when that was only a cough or an "mm-hm": the interaction model
  decides; a barge-in then cuts the held utterance as usual, and the user has heard only what played before.
- ``Interrupt(generation=g)`` (control lane, read before queued data) drops every queued utterance of
  generation <= g at once, so no further word of it plays (playout stops within the tick of the barge-in), and
  publishes ``Heard(u, text_heard=<exactly the words played>, truncated=True)`` for each (empty text for one
  that had not started). Later chunks or starts of those generations are discarded as stale.

A word counts as heard from the window its slot starts in. Delivery of background results (``interrupt`` /
``when_idle`` / ``silent``) is decided upstream: the interaction model phrases and times them, and the
interaction actor turns an ``interrupt`` delivery into an ``Interrupt``; here they are ordinary utterances, and
"nothing playing" is exact because an utterance only ends (``Heard``) when its last slot has played.

Audio: with ``render_audio=True`` and espeak-ng installed, each word is synthesised (``Synthesizer``, cached
on disk and in memory) at a rate a little faster than the slot, trimmed of leading and trailing silence,
sped up (soxr) if still longer than its slot, and laid at its slot's start; the audio is therefore aligned
with the text ledger word by word (prosody is word-at-a-time, as befits a stand-in voice). Each Playout
carries the window's ``round(period * 16000)`` samples (3200 at 200 ms). Without espeak-ng, pcm stays empty.
``OutputChunk.audio`` (model-generated audio) is not mixed yet: no backend produces it.

With ``wav_path`` the mixer also subscribes to ``UserAudio`` and, when the session stops, writes a stereo
16 kHz WAV: user left (each message resampled to 16 kHz and placed at its arrival time, or right after the
previous one), assistant right (each Playout's pcm at its window's start).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import soxr
import trio

from microturn.audio import (
    TARGET_RATE,
    AudioInputError,
    SynthesisError,
    SynthesisUnavailable,
    Synthesizer,
    espeak_available,
    float_to_pcm16,
    pcm16_to_16k,
    write_stereo_wav,
)
from microturn.messages import Heard, Interrupt, OutputChunk, Playout, SpeechStarted, Tick, UserAudio
from microturn.runtime import Actor

__all__ = ["OutputMixer"]

_SILENCE_LEVEL = 300  # int16 magnitude under which espeak's lead-in and tail count as silence
_FADE = 80  # samples (5 ms) of fade at each end of a word's audio


@dataclass
class _Utterance:
    """One utterance in the playout queue; positions are samples from the utterance's first window."""

    utterance_id: int
    generation: int
    words: deque[str] = field(default_factory=deque)  # arrived, not yet played
    played: list[str] = field(default_factory=list)
    complete: bool = False
    cursor: int = 0  # start of the next window to play
    next_start: int = 0  # where the next word may start: the end of the previous word's slot
    audio: bytearray = field(default_factory=bytearray)


class OutputMixer(Actor):
    """Turns the interaction model's words into per-tick ``Playout`` and the ``Heard`` ledger."""

    subscriptions = (Tick, SpeechStarted, OutputChunk, Interrupt)

    def __init__(
        self,
        *,
        words_per_tick: float = 0.5,
        render_audio: bool = False,
        synthesizer: Synthesizer | None = None,
        wav_path: str | os.PathLike[str] | None = None,
        name: str = "output_mixer",
    ) -> None:
        if words_per_tick <= 0:
            raise ValueError(f"OutputMixer(words_per_tick=...) must be > 0, got {words_per_tick!r}")
        if wav_path is not None:
            # Only a mixer that writes the session's audio needs the user's audio.
            self.subscriptions = (*type(self).subscriptions, UserAudio)
        super().__init__(name)
        self.words_per_tick = float(words_per_tick)
        self.render_audio = render_audio
        self.synthesizer = synthesizer
        self.wav_path = wav_path
        self.ledger: list[Heard] = []
        """Every Heard published, in order."""
        self.stale = 0
        """Output chunks dropped because their generation had been interrupted."""
        self._user: list[tuple[int, np.ndarray]] = []  # (start sample, float32 16 kHz) of the WAV's left track
        self._user_end = 0
        self._assistant: list[tuple[int, bytes]] = []  # (start sample, PCM16) of the WAV's right track
        self._word_pcm: dict[str, bytes] = {}
        # The queue outlives a restart: every queued utterance still owes its Heard.
        self.queue: deque[_Utterance] = deque()
        self.cut_generation = -1
        self.paused: int | None = None
        """The newest generation whose playout is held (``pause``), or None."""

    async def on_start(self) -> None:
        """Derive window and slot sizes from the session's tick period; find the synthesiser."""
        period = self.session.clock.period
        self.window = round(period * TARGET_RATE)
        self.slot = round(self.window / self.words_per_tick)
        self.voice: Synthesizer | None = None
        if self.render_audio:
            if self.synthesizer is not None or espeak_available():
                wpm = round(1.5 * self.words_per_tick * 60 / period)  # faster than the slot, so words fit
                self.voice = self.synthesizer or Synthesizer()
                self.espeak_wpm = min(450, max(80, wpm))
            else:
                self.log.warning("espeak_unavailable", detail="render_audio=True but espeak-ng is not on PATH")

    async def handle(self, message: object) -> None:
        """Queue utterances and words, play one window per tick, cut on interrupts, collect the user's audio."""
        match message:
            case Tick(tick=tick):
                await self._play(tick)
            case SpeechStarted(utterance_id=uid, generation=g) if g > self.cut_generation:
                self.queue.append(_Utterance(uid, g))
            case OutputChunk(generation=g) if g <= self.cut_generation:
                self.stale += 1
            case OutputChunk(generation=g, text=text, controls=controls):
                if "resume" in controls and self.paused is not None:
                    self.paused = None
                    self.log.info("playout_resumed", generation=g)
                elif "pause" in controls and self.paused is None:
                    self.paused = g
                    self.log.info("playout_paused", generation=g)
                target = next((u for u in reversed(self.queue) if u.generation == g and not u.complete), None)
                words = text.split()
                if target is None:
                    if words:
                        self.log.warning("words_without_utterance", generation=g, text=text)
                    return
                target.words.extend(words)
                if self.voice is not None:
                    for word in words:  # synthesise on arrival, off the tick's path; off the loop in realtime
                        if word not in self._word_pcm and self.session.clock.mode == "realtime":
                            await trio.to_thread.run_sync(self._pcm_for, word)
                        self._pcm_for(word)
                if "end_utterance" in controls:
                    target.complete = True
            case Interrupt(generation=g):
                await self._cut(g)
            case UserAudio(pcm=pcm, sample_rate=rate, channels=channels):
                try:
                    samples = pcm16_to_16k(pcm, rate, channels, max_seconds=None)
                except AudioInputError as exc:  # perception rejects it too; the recording just skips it
                    self.log.warning("user_audio_rejected", error=str(exc))
                    return
                arrival = round(message.stamp.time * TARGET_RATE) if message.stamp is not None else 0
                start = max(self._user_end, arrival)
                self._user.append((start, samples))
                self._user_end = start + samples.size

    async def on_stop(self) -> None:
        """Write the session's stereo WAV when asked to."""
        if self.wav_path is None:
            return
        user = _assemble([(s, np.frombuffer(float_to_pcm16(x), dtype="<i2")) for s, x in self._user])
        assistant = _assemble([(s, np.frombuffer(p, dtype="<i2")) for s, p in self._assistant])
        write_stereo_wav(self.wav_path, user, assistant, TARGET_RATE)
        self.log.info(
            "wav_written", path=os.fspath(self.wav_path), seconds=max(user.size, assistant.size) / TARGET_RATE
        )

    # --- playing --------------------------------------------------------------------------------------------

    async def _play(self, tick: int) -> None:
        """Play window ``tick`` of the utterance at the head of the queue."""
        if not self.queue:
            return
        u = self.queue[0]
        if self.paused is not None:
            if u.generation <= self.paused:
                return  # held: its clock stands still until resume (or a cut)
            self.paused = None  # what it held is gone
        start, end = u.cursor, u.cursor + self.window
        played: list[str] = []
        while u.words and u.next_start < end:
            at = max(u.next_start, start)
            word = u.words.popleft()
            played.append(word)
            u.played.append(word)
            if self.voice is not None:
                u.audio.extend(bytes(2 * at - len(u.audio)))
                u.audio.extend(self._pcm_for(word))
            u.next_start = at + self.slot
        u.cursor = end
        if played or start < u.next_start:
            pcm = b""
            if self.voice is not None:
                pcm = bytes(u.audio[2 * start : 2 * end]).ljust(2 * self.window, b"\0")
                if self.wav_path is not None:
                    self._assistant.append((tick * self.window, pcm))
            await self.publish(Playout(tick=tick, utterance_id=u.utterance_id, text=" ".join(played), pcm=pcm))
        if u.complete and not u.words and u.cursor >= u.next_start:
            self.queue.popleft()
            await self._heard(u, truncated=False)

    async def _cut(self, generation: int) -> None:
        """Drop every utterance of ``generation`` or older; report exactly what was heard of each."""
        self.cut_generation = max(self.cut_generation, generation)
        if self.paused is not None and self.paused <= generation:
            self.paused = None
        keep: deque[_Utterance] = deque()
        for u in self.queue:
            if u.generation <= generation:
                self.log.info("playout_cut", utterance=u.utterance_id, played=len(u.played), dropped=len(u.words))
                await self._heard(u, truncated=True)
            else:
                keep.append(u)
        self.queue = keep

    async def _heard(self, u: _Utterance, *, truncated: bool) -> None:
        heard = Heard(utterance_id=u.utterance_id, text_heard=" ".join(u.played), truncated=truncated)
        self.ledger.append(await self.publish(heard))  # type: ignore[arg-type]

    # --- audio ----------------------------------------------------------------------------------------------

    def _pcm_for(self, word: str) -> bytes:
        """One word's audio, exactly one slot long (cached)."""
        cached = self._word_pcm.get(word)
        if cached is not None:
            return cached
        assert self.voice is not None
        try:
            x = np.frombuffer(self.voice.synthesize(word, wpm=self.espeak_wpm), dtype="<i2")
        except (SynthesisUnavailable, SynthesisError, AudioInputError) as exc:
            self.log.warning("word_not_synthesised", word=word, error=str(exc))
            x = np.zeros(0, dtype="<i2")
        loud = np.flatnonzero(np.abs(x.astype(np.int32)) > _SILENCE_LEVEL)
        x = x[loud[0] : loud[-1] + 1] if loud.size else x[:0]
        if x.size > self.slot:
            # Too long for its slot even at the faster rate: speed it up (soxr, at arbitrary rates) to fit.
            y = soxr.resample(x.astype(np.float32) / 32768.0, x.size, self.slot)
            x = (np.clip(y, -1.0, 1.0 - 1 / 32768) * 32768.0).astype("<i2")[: self.slot]
        ramp = min(_FADE, x.size // 2)
        if ramp:  # fade the cut edges in and out: no clicks between words
            x = x.astype(np.float32)
            x[:ramp] *= np.linspace(0.0, 1.0, ramp, dtype=np.float32)
            x[x.size - ramp :] *= np.linspace(1.0, 0.0, ramp, dtype=np.float32)
        pcm = x.astype("<i2").tobytes().ljust(2 * self.slot, b"\0")
        self._word_pcm[word] = pcm
        return pcm


def _assemble(parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Lay int16 pieces at their start samples on one silent track."""
    n = max((s + x.size for s, x in parts), default=0)
    track = np.zeros(n, dtype="<i2")
    for start, x in parts:
        track[start : start + x.size] = x
    return track
