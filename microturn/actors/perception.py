"""The perception actor: closes every 200 ms window into one ``InputChunk``.

Between ticks it collects ``UserAudio``, ``UserText`` and ``UserImage``; at ``Tick(k)`` it publishes
``InputChunk(tick=k)`` with exactly 4 dMel frames (docs/design.md §6), the text that arrived, the 40x40 patches of any
images and a speech probability. The choices, in short:

- **Audio is one continuous 16 kHz stream.** Every message is validated, mixed down to mono, resampled with a
  streaming resampler per input rate (flushed when the rate changes) and appended to a sample buffer. Each
  tick consumes exactly one window of samples (3200 at 200 ms). Audio that arrives ahead of time waits in the
  buffer (a scenario may "play" a whole utterance in one message); a window short of audio is completed with
  silence (zeros) and the late samples follow in the next window, so no accepted sample is dropped and the
  dMel stream stays contiguous. Hence the frames equal ``dmel`` of the whole (resampled) signal bit for bit
  whenever the audio is there in time. The resampler holds back a filter delay and releases output in
  blocks, so audio delivered exactly in real time at another rate gains some silence in the first ticks
  (~50 ms at 48 kHz) while the buffer finds its depth, and none after that.
- **Bad input never stops the session.** A wrong rate, odd byte count, empty or oversized message, NaN, an
  overfull buffer or a bad image is logged (``input_rejected``, naming the field and value), counted in
  ``rejected`` and dropped whole; what was accepted before is untouched. Float samples outside [-1, 1) are
  clipped rather than dropped (``input_clipped``, counted in ``clipped_samples``): a hot signal is still
  speech, while NaN or infinity has no value to keep.
- ``UserAudio`` is subscribed with ``block``: handling only decodes and buffers, so the queue never stays
  full, and dropping media would break the stream; the buffer cap (``max_buffer_seconds``) bounds memory.
- **Text** is passed through raw, pieces concatenated unchanged in arrival order (a transport sending
  separate utterances adds its own separator); tokenizing is the model backend's job.
- **Images** are split into 40x40x3 patches, zero-padded to a multiple of 40, in row-major patch order.
  An image enters whole in one chunk (chunks carry no grid shape, so it is never split across ticks); at most
  ``max_patches_per_tick`` patches go into one chunk, further images wait for the next tick, and an image
  larger than that cap is rejected. PNG/JPEG need Pillow.
- **Speech probability** comes from a pluggable ``VoiceActivityDetector`` fed each window's samples; the
  built-in ``EnergyVAD`` reuses the magnitude spectra already computed for dMel.
"""

from __future__ import annotations

import io
import math
from collections import deque

import numpy as np

from microturn.audio import (
    DMEL,
    MAX_MESSAGE_SECONDS,
    TARGET_RATE,
    AudioInputError,
    DMelStream,
    EnergyVAD,
    SileroVAD,
    StreamResampler,
    VoiceActivityDetector,
    decode_pcm16,
)
from microturn.audio.pcm import FLOAT_MAX, check_rate, clip_to_range
from microturn.audio.prosody import FRAME_SECONDS, final_cue, speech_end
from microturn.audio.resample import check_mono_float
from microturn.messages import InputChunk, Message, Tick, UserAudio, UserImage, UserText
from microturn.runtime import Actor, Overflow, Subscribe

__all__ = ["PATCH", "PerceptionActor", "patchify"]

PATCH = 40
"""Side of an image patch in pixels (docs/design.md §6)."""


_SPEECH_PROB = 0.5  # the VAD probability above which a window holds speech for speech_end / speech_final


class _Rejected(ValueError):
    def __init__(self, field: str, value: object, problem: str) -> None:
        super().__init__(f"{field}={value!r}: {problem}")
        self.field, self.value, self.problem = field, value, problem


def _join_pieces(pieces: list[str]) -> str:
    """Join the text pieces of one window, adding a space where two pieces would otherwise glue two words."""
    out = ""
    for piece in pieces:
        if out and not out[-1].isspace() and not piece[:1].isspace():
            out += " "
        out += piece
    return out


def patchify(image: np.ndarray, size: int = PATCH) -> np.ndarray:
    """Split an RGB image [height, width, 3] (uint8) into patches [n, size, size, 3]: zero-padded at the right
    and bottom to a multiple of ``size``, in row-major patch order (left to right, then top to bottom)."""
    img = np.asarray(image, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3 or not img.shape[0] or not img.shape[1]:
        raise ValueError(f"expected a non-empty RGB image [height, width, 3], got shape {img.shape}")
    rows, cols = -(-img.shape[0] // size), -(-img.shape[1] // size)
    padded = np.zeros((rows * size, cols * size, 3), np.uint8)
    padded[: img.shape[0], : img.shape[1]] = img
    return padded.reshape(rows, size, cols, size, 3).transpose(0, 2, 1, 3, 4).reshape(-1, size, size, 3)


def _make_vad(vad: VoiceActivityDetector | str | None) -> VoiceActivityDetector:
    if vad is None or vad == "energy":
        return EnergyVAD()
    if vad == "silero":
        return SileroVAD()  # raises VADUnavailable (pip install 'microturn[vad]') when it is not installed
    if isinstance(vad, str):
        raise ValueError(f"PerceptionActor(vad=...) must be 'energy', 'silero' or a detector, got {vad!r}")  # noqa: TRY004
    if not isinstance(vad, VoiceActivityDetector):
        raise TypeError(f"PerceptionActor(vad=...) needs reset() and speech_prob(samples), got {vad!r}")
    return vad


class PerceptionActor(Actor):
    """Turns the user's audio, text and images into one ``InputChunk`` per tick (see the module docstring).

    Counters: ``rejected`` (inputs refused), ``clipped_samples`` (samples outside [-1, 1) clipped),
    ``padded_samples`` (silence added for late or missing audio),
    ``chunks`` (chunks published)."""

    subscriptions = (Tick, Subscribe(UserAudio, Overflow.BLOCK), UserText, UserImage)

    def __init__(
        self,
        *,
        vad: VoiceActivityDetector | str | None = None,
        max_message_seconds: float = MAX_MESSAGE_SECONDS,
        max_buffer_seconds: float = 60.0,
        max_patches_per_tick: int = 576,
        max_pending_images: int = 8,
        max_text_chars: int = 65536,
        name: str = "perception",
    ) -> None:
        super().__init__(name)
        if not 0 < max_message_seconds <= max_buffer_seconds:
            raise ValueError("need 0 < max_message_seconds <= max_buffer_seconds")
        if max_patches_per_tick < 1 or max_pending_images < 1 or max_text_chars < 1:
            raise ValueError("max_patches_per_tick, max_pending_images and max_text_chars must be >= 1")
        self.vad = _make_vad(vad)
        self.max_message_seconds = max_message_seconds
        self.max_buffer_samples = round(max_buffer_seconds * TARGET_RATE)
        self.max_patches_per_tick = max_patches_per_tick  # 576 = 24x24 patches, e.g. 960x960 or 1280x720
        self.max_pending_images = max_pending_images
        self.max_text_chars = max_text_chars
        self.tick_samples = round(0.2 * TARGET_RATE)
        self.rejected = 0
        self.clipped_samples = 0
        self.padded_samples = 0
        self.chunks = 0
        self.reset()

    def reset(self) -> None:
        """Forget all buffered input and stream state (dMel history, resampler, VAD)."""
        self._dmel = DMelStream(DMEL)
        self._resampler: StreamResampler | None = None
        self._chunks: deque[np.ndarray] = deque()
        self._buffered = 0
        self._text: list[str] = []
        self._images: deque[tuple[int, bytes]] = deque()
        self._last = np.zeros(0, dtype=np.float32)  # the previous window: prosody context for an early end
        self._last_prob = 0.0
        self.vad.reset()

    async def on_start(self) -> None:
        """Size the window from the session's tick period (it must be a whole number of dMel hops)."""
        samples = round(self.session.clock.period * TARGET_RATE)
        if samples % DMEL.hop or not samples:
            raise ValueError(f"tick period {self.session.clock.period} s is not a whole number of 50 ms dMel hops")
        self.tick_samples = samples

    async def handle(self, message: Message) -> None:
        """Buffer inputs; on ``Tick(k)`` publish the chunk of window k."""
        match message:
            case Tick(tick=tick):
                await self.publish(self.close_window(tick))
            case UserAudio():
                try:
                    x = decode_pcm16(
                        message.pcm, message.sample_rate, message.channels, max_seconds=self.max_message_seconds
                    )
                except AudioInputError as exc:
                    self._reject("UserAudio", exc.field, exc.value, exc.problem)
                else:
                    self.push_samples(x, message.sample_rate, message_type="UserAudio", field="pcm")
            case UserText(text=text):
                if not isinstance(text, str) or len(text) > self.max_text_chars:
                    shown = f"{len(text)} chars" if isinstance(text, str) else type(text).__name__
                    self._reject("UserText", "text", shown, f"need a str of at most {self.max_text_chars} chars")
                elif text:
                    self._text.append(text)
            case UserImage():
                try:
                    if len(self._images) >= self.max_pending_images:
                        raise _Rejected(
                            "data", f"{len(message.data)} bytes", f"{self.max_pending_images} images already waiting"
                        )
                    image = self._decode_image(message)
                    patches = patchify(image)
                except _Rejected as exc:
                    self._reject("UserImage", exc.field, exc.value, exc.problem)
                else:
                    grid = (-(-image.shape[0] // PATCH), -(-image.shape[1] // PATCH))
                    self._images.append((len(patches), patches.tobytes(), grid))

    def push_samples(
        self, samples: np.ndarray, sample_rate: int, *, message_type: str = "samples", field: str = "samples"
    ) -> bool:
        """Append float mono audio at ``sample_rate`` to the stream (the path ``UserAudio`` takes, usable by an
        in-process transport). Returns False (logged, counted, nothing changed) when the input is refused: a
        bad rate or shape, NaN or infinity, too long, a full buffer — it never raises. Finite samples outside
        [-1, 1) are clipped (counted in ``clipped_samples``, logged as ``input_clipped``) and the rest kept."""
        try:
            rate = check_rate(sample_rate)
            raw = check_mono_float(samples, field=field)
            x, clipped = clip_to_range(raw)
            if not x.size:
                raise AudioInputError(field, "0 samples", "empty audio")
            seconds = x.size / rate
            if seconds > self.max_message_seconds:
                raise AudioInputError(field, f"{seconds:.3f} s", f"longer than {self.max_message_seconds:g} s")
            if self._buffered + round(seconds * TARGET_RATE) > self.max_buffer_samples:
                raise AudioInputError(
                    field, f"{seconds:.3f} s", f"audio buffer full ({self._buffered / TARGET_RATE:.1f} s queued)"
                )
        except AudioInputError as exc:
            self._reject(message_type, exc.field, exc.value, exc.problem)
            return False
        if clipped:
            self.clipped_samples += clipped
            peak = float(np.max(np.abs(raw)))
            self.log.warning("input_clipped", message_type=message_type, field=field, samples=clipped, peak=peak,
                             range=f"[-1, {FLOAT_MAX:.6f}]", clipped_samples=self.clipped_samples)
        if self._resampler is None or self._resampler.rate_in != rate:
            if self._resampler is not None:
                self._append(self._resampler.flush())  # the old rate's filter tail belongs before the new audio
            self._resampler = StreamResampler(rate)
        self._append(self._resampler.push(x))
        return True

    def close_window(self, tick: int) -> InputChunk:
        """Consume one window of input and build its chunk (what ``Tick(tick)`` publishes)."""
        samples = self._take(self.tick_samples)
        frames = self._dmel.push_frames(samples)
        if isinstance(self.vad, EnergyVAD) and self.vad.params == DMEL:
            prob = self.vad.speech_prob_from_magnitudes(frames.magnitudes)  # reuse the dMel spectra
        else:
            prob = self.vad.speech_prob(samples)
        prob = float(prob)
        if not 0.0 <= prob <= 1.0:  # NaN fails this too
            self.log.warning("vad_out_of_range", value=prob)
            prob = 0.0 if math.isnan(prob) else min(max(prob, 0.0), 1.0)
        end, final = self._speech_end(samples, prob)
        text, self._text = _join_pieces(self._text), []
        patches, n_patches, grids = [], 0, []
        while self._images and n_patches + self._images[0][0] <= self.max_patches_per_tick:
            n, data, grid = self._images.popleft()
            patches.append(data)
            grids.append(grid)
            n_patches += n
        self.chunks += 1
        return InputChunk(
            tick=tick,
            dmel=frames.levels.tobytes(),
            n_frames=len(frames.levels),
            text=text,
            patches=b"".join(patches),
            n_patches=n_patches,
            image_grids=grids,
            speech_prob=prob,
            speech_end=end,
            speech_final=final,
        )

    def _speech_end(self, samples: np.ndarray, prob: float) -> tuple[float | None, bool | None]:
        """Where sound ends inside this window and how it ended, when this window or the one before was
        speech to the VAD (a noise blip in silence says nothing about a turn, and costs no pitch tracking)."""
        previous, self._last, self._last_prob = (self._last, self._last_prob), samples, prob
        if max(prob, previous[1]) < _SPEECH_PROB:
            return None, None
        end = speech_end(samples, TARGET_RATE)
        if end is None or end > samples.size / TARGET_RATE - FRAME_SECONDS / 2:
            return None, None  # silent throughout, or sounding to the window's end: no end here
        context = np.concatenate([previous[0], samples[: round(end * TARGET_RATE)]])
        return end, final_cue(context, TARGET_RATE).final

    # --- internals -----------------------------------------------------------------------------------------

    def _reject(self, message_type: str, field: str, value: object, problem: str) -> None:
        self.rejected += 1
        self.log.warning(
            "input_rejected",
            message_type=message_type,
            field=field,
            value=str(value),
            problem=problem,
            rejected=self.rejected,
        )

    def _append(self, x: np.ndarray) -> None:
        if x.size:
            self._chunks.append(x)
            self._buffered += x.size

    def _take(self, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)  # whatever is missing stays silence
        filled = 0
        while filled < n and self._chunks:
            head = self._chunks[0]
            k = min(n - filled, head.size)
            out[filled : filled + k] = head[:k]
            filled += k
            if k == head.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[k:]
        self._buffered -= filled
        self.padded_samples += n - filled
        return out

    def _decode_image(self, msg: UserImage) -> np.ndarray:
        if msg.format == "rgb":
            w, h = msg.width, msg.height
            if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
                raise _Rejected("width x height", f"{w}x{h}", "an RGB image needs positive width and height")
            self._check_size(w, h)
            if len(msg.data) != w * h * 3:
                raise _Rejected("data", f"{len(msg.data)} bytes", f"expected {w}x{h}x3 = {w * h * 3} bytes")
            return np.frombuffer(msg.data, np.uint8).reshape(h, w, 3)
        if msg.format not in ("png", "jpeg"):
            raise _Rejected("format", msg.format, "must be 'rgb', 'png' or 'jpeg'")
        try:
            from PIL import Image
        except ImportError:
            raise _Rejected("format", msg.format,
                            "decoding PNG/JPEG needs the 'images' extra: pip install 'microturn[images]'") from None
        try:
            with Image.open(io.BytesIO(msg.data)) as img:
                if img.format != msg.format.upper():
                    raise _Rejected("format", msg.format, f"the data is {img.format or 'unknown'}")
                self._check_size(*img.size)  # before decoding the pixels (decompression bombs)
                return np.asarray(img.convert("RGB"))
        except _Rejected:
            raise
        except Exception as exc:  # noqa: BLE001 - untrusted bytes: Pillow raises many kinds of errors
            raise _Rejected("data", f"{len(msg.data)} bytes", f"not a valid {msg.format}: {exc}") from None

    def _check_size(self, w: int, h: int) -> None:
        n = -(-w // PATCH) * -(-h // PATCH)
        if n > self.max_patches_per_tick:
            raise _Rejected(
                "width x height", f"{w}x{h}", f"{n} patches, more than the {self.max_patches_per_tick} per tick"
            )
