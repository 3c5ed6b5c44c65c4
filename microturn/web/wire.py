"""The web socket's frames: one tagged union each way, JSON, with a protocol version ``v``."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_PCM_BYTES",
    "MAX_TEXT",
    "VERSION",
    "AudioIn",
    "AudioOut",
    "ClientFrame",
    "ErrorFrame",
    "Played",
    "ServerFrame",
    "StateFrame",
    "Stop",
    "TextIn",
    "ToolFrame",
    "Words",
    "decode_client",
]

VERSION = 1
MAX_PCM_BYTES = 16000 * 2 // 50 * 5
"""At most 100 ms of 16 kHz PCM16 in one frame (the page sends 20 ms)."""
MAX_TEXT = 4096
MAX_FRAME_BYTES = 64 << 10
"""A larger socket message is refused before it is parsed."""


class _Frame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    v: int = VERSION


class AudioIn(_Frame, tag="audio"):
    """20 ms of the user's microphone: little-endian PCM16 mono at 16 kHz (base64 in JSON)."""

    pcm: bytes


class TextIn(_Frame, tag="text"):
    """A typed line."""

    text: str


class Played(_Frame, tag="played"):
    """The page's playout acknowledgement: ``samples`` of the assistant's audio actually played so far."""

    samples: int


ClientFrame = AudioIn | TextIn | Played
"""What the page sends."""


class AudioOut(_Frame, tag="audio_out"):
    """A chunk of the assistant's voice, PCM16 mono at ``sample_rate``."""

    utterance_id: int
    pcm: bytes
    sample_rate: int = 16000


class Words(_Frame, tag="words"):
    """Words of the assistant as they are spoken (``role`` assistant) or the user's line (``role`` user)."""

    role: Literal["user", "assistant"]
    text: str
    utterance_id: int = 0


class Stop(_Frame, tag="stop"):
    """Flush playback now: the assistant was interrupted (or finished and was cut)."""

    utterance_id: int
    reason: str = ""


class StateFrame(_Frame, tag="state"):
    """The dialog state after a tick."""

    floor: str
    user: str
    assistant: str


class ToolFrame(_Frame, tag="tool"):
    """A tool call or background task and its status."""

    id: str
    name: str
    status: str


class ErrorFrame(_Frame, tag="error"):
    """A refused frame: ``field`` and ``value`` say what was wrong; the session goes on."""

    field: str
    value: str
    message: str


ServerFrame = AudioOut | Words | Stop | StateFrame | ToolFrame | ErrorFrame
"""What the server sends."""

_decoder = msgspec.json.Decoder(ClientFrame)


class FrameError(ValueError):
    """A client frame refused; carries the field and the value for the error frame."""

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = repr(value)[:80]


def decode_client(data: str | bytes) -> AudioIn | TextIn | Played:
    """Parse and range-check one client frame; raises :class:`FrameError` naming the field and the value."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError("frame", f"{len(data)} bytes", f"frame of {len(data)} bytes; at most {MAX_FRAME_BYTES}")
    try:
        frame = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.rsplit("at `$.", 1)[1].rstrip("`") if "at `$." in text else "frame"
        raise FrameError(field, str(data)[:60], text) from None
    except msgspec.DecodeError as exc:
        raise FrameError("frame", str(data)[:60], f"not JSON: {exc}") from None
    if frame.v != VERSION:
        raise FrameError("v", frame.v, f"protocol version {frame.v}; this server speaks {VERSION}")
    if isinstance(frame, AudioIn) and (len(frame.pcm) > MAX_PCM_BYTES or len(frame.pcm) % 2):
        raise FrameError("pcm", f"{len(frame.pcm)} bytes",
                         f"pcm must be an even number of bytes, at most {MAX_PCM_BYTES}")
    if isinstance(frame, TextIn) and not 0 < len(frame.text) <= MAX_TEXT:
        raise FrameError("text", frame.text, f"text must be 1..{MAX_TEXT} characters")
    if isinstance(frame, Played) and not 0 <= frame.samples < 1 << 40:
        raise FrameError("samples", frame.samples, "samples must be >= 0")
    return frame
