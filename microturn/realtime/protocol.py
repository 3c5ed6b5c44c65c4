"""Client frames in, server events out, for the OpenAI Realtime protocol, with the ``openai`` package's types.

A frame that cannot be used (too big, not JSON, not an object, an unknown ``type``, a field of the wrong shape,
audio that is not base64 PCM16) becomes a :class:`FrameError` naming the field and the value; the transport
answers it with :func:`error_event` and the session goes on. Audio crosses the socket as 24 kHz PCM16 (the
protocol default) and is resampled to and from the pipeline's 16 kHz with the project's streaming resampler, so
any chunking of the stream gives the same samples.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

import numpy as np

from microturn.audio.errors import AudioInputError
from microturn.audio.pcm import TARGET_RATE, float_to_pcm16
from microturn.audio.resample import StreamResampler

try:  # optional: the realtime extra
    import pydantic
    from openai.types.realtime import (
        RealtimeClientEvent,
        RealtimeError,
        RealtimeErrorEvent,
        ResponseAudioDeltaEvent,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("microturn.realtime needs the realtime extra: pip install 'microturn[realtime]'") from exc

__all__ = [
    "MAX_FRAME_BYTES",
    "WIRE_RATE",
    "FrameError",
    "InputAudio",
    "OutputAudio",
    "error_event",
    "new_event_id",
    "parse_client_event",
]

# The protocol's default pcm16 rate; the pipeline runs at TARGET_RATE (16 kHz).
WIRE_RATE = 24000
# One frame at most: 10 s of 24 kHz pcm16 in base64 (~640 KB) plus room for the JSON around it.
MAX_FRAME_BYTES = 1 << 20

# The SDK's union carries its discriminator as openai's own PropertyInfo, which pydantic does not read, so we
# pick the member by its Literal["..."] tag ourselves: a bad field is then reported against the right event.
_CLIENT_EVENTS: dict[str, type[pydantic.BaseModel]] = {
    member.model_fields["type"].annotation.__args__[0]: member
    for member in RealtimeClientEvent.__origin__.__args__  # type: ignore[attr-defined]
}
_KNOWN_TYPES = frozenset(_CLIENT_EVENTS)


class FrameError(ValueError):
    """A client frame that cannot be used: ``param`` names the field, ``value`` what was there."""

    def __init__(self, param: str, value: object, problem: str, event_id: str | None = None) -> None:
        # not a frozen dataclass: raising sets __cause__/__context__ on the instance
        self.param = param
        self.value = value
        self.problem = problem
        self.event_id = event_id
        super().__init__(param, value, problem)

    def __str__(self) -> str:
        shown = repr(self.value)
        if len(shown) > 80:  # an error names the value, but never echoes a megabyte back
            shown = shown[:77] + "..."
        return f"{self.param}={shown}: {self.problem}"


def parse_client_event(frame: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """One client frame as its ``openai.types.realtime`` event, else :class:`FrameError`.

    Audio in ``input_audio_buffer.append`` is checked to be base64 of whole PCM16 samples here, so a bad
    append is refused before anything of it reaches the pipeline.
    """
    size = len(frame.encode() if isinstance(frame, str) else frame)
    if size > max_bytes:
        raise FrameError("frame", f"{size} bytes", f"larger than the limit of {max_bytes} bytes")
    try:
        data = json.loads(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameError("frame", frame[:40], f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FrameError("frame", type(data).__name__, "expected a JSON object")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    if kind not in _KNOWN_TYPES:
        raise FrameError("type", kind, f"not a client event (one of {', '.join(sorted(_KNOWN_TYPES))})", event_id)
    try:
        event: Any = _CLIENT_EVENTS[kind].model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        value = "(missing)" if first["type"] == "missing" else first.get("input")
        raise FrameError(".".join(loc) or "frame", value, first["msg"], event_id) from None
    if kind == "input_audio_buffer.append":
        decode_audio(event.audio, event_id=event_id)
    return event


def decode_audio(audio: str, *, event_id: str | None = None, param: str = "audio") -> bytes:
    """Base64 ``audio`` as PCM16 bytes (a whole number of samples), else :class:`FrameError`."""
    try:
        raw = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError(param, audio, "not base64", event_id) from None
    if len(raw) % 2:
        raise FrameError(param, f"{len(raw)} bytes", "not whole 16-bit samples (odd byte count)", event_id)
    return raw


def error_event(error: FrameError | str, *, kind: str = "invalid_request_error") -> RealtimeErrorEvent:
    """The protocol's ``error`` server event for a refused frame (or any message)."""
    if isinstance(error, FrameError):
        body = RealtimeError(type=kind, message=str(error), param=error.param, event_id=error.event_id)
    else:
        body = RealtimeError(type=kind, message=error)
    return RealtimeErrorEvent(type="error", event_id=new_event_id(), error=body)


def new_event_id() -> str:
    """A fresh server event id."""
    return f"event_{uuid.uuid4().hex[:20]}"


class InputAudio:
    """The client's 24 kHz PCM16 stream as the pipeline's 16 kHz float samples, chunk by chunk."""

    def __init__(self, rate: int = WIRE_RATE) -> None:
        self._resampler = StreamResampler(rate, TARGET_RATE)

    def push(self, audio_b64: str) -> np.ndarray:
        """One append's base64 audio -> the 16 kHz samples ready so far (FrameError if it is not PCM16)."""
        raw = decode_audio(audio_b64)
        if not raw:  # an empty append is harmless on the wire: nothing to add
            return np.zeros(0, np.float32)
        try:
            return self._resampler.push_pcm16(raw)
        except AudioInputError as exc:
            raise FrameError("audio", exc.value, exc.problem) from None

    def flush(self) -> np.ndarray:
        """End of the stream (a commit or clear): the samples still held in the filter."""
        return self._resampler.flush()


class OutputAudio:
    """The pipeline's 16 kHz float output as ``response.output_audio.delta`` events at 24 kHz."""

    def __init__(self, rate: int = WIRE_RATE) -> None:
        self._resampler = StreamResampler(TARGET_RATE, rate)

    def delta(
        self, samples: np.ndarray, *, response_id: str, item_id: str, output_index: int = 0, content_index: int = 0
    ) -> ResponseAudioDeltaEvent | None:
        """The delta event for the next 16 kHz chunk, or None while the resampler holds it all back."""
        return self._event(self._resampler.push(samples), response_id, item_id, output_index, content_index)

    def finish(
        self, *, response_id: str, item_id: str, output_index: int = 0, content_index: int = 0
    ) -> ResponseAudioDeltaEvent | None:
        """The last delta of a response (what the filter still held), then ready for the next response."""
        return self._event(self._resampler.flush(), response_id, item_id, output_index, content_index)

    def _event(
        self, out: np.ndarray, response_id: str, item_id: str, output_index: int, content_index: int
    ) -> ResponseAudioDeltaEvent | None:
        if not out.size:
            return None
        return ResponseAudioDeltaEvent(
            type="response.output_audio.delta",
            event_id=new_event_id(),
            response_id=response_id,
            item_id=item_id,
            output_index=output_index,
            content_index=content_index,
            delta=base64.b64encode(float_to_pcm16(np.clip(out, -1.0, 32767 / 32768))).decode("ascii"),
        )
