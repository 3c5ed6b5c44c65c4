"""Recordings: an append-only log of every bus message of a session.

Layout: the magic bytes ``MTREC\\x00``, then frames. A frame is a 4-byte little-endian payload length, the
payload's 4-byte CRC-32, and the payload. The first payload is the msgpack :class:`RecordingHeader`; every
other is one stamped message, in sequence order. A session that crashes mid-write leaves a short or corrupt
last frame: the reader detects it, reports where, and keeps the intact prefix.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from microturn.messages import AnyMessage, Message, MessageDecodeError, Tick, decode, encode

from ._errors import RecordingError, RecordingVersionError

__all__ = ["RecordingHeader", "Recording", "Recorder", "read_recording", "FORMAT_VERSION"]

MAGIC = b"MTREC\x00"
FORMAT_VERSION = 1
_FRAME = struct.Struct("<II")


class RecordingHeader(msgspec.Struct, frozen=True, kw_only=True):
    """What a recording needs to be replayed: the session's shape, and how to build its actors again.

    ``factory`` is an import path ``"package.module:function"``; ``function(**params)`` returns the actors."""

    version: int = FORMAT_VERSION
    session_id: str
    mode: str
    tick_period: float
    actors: list[str]
    factory: str | None = None
    params: dict[str, Any] = {}
    meta: dict[str, Any] = {}


class Recording(msgspec.Struct, kw_only=True):
    """A loaded recording: its header, its intact messages, and whether (and where) its tail was cut off."""

    path: str
    header: RecordingHeader
    messages: list[AnyMessage]
    truncated: bool = False
    problem: str | None = None

    @property
    def inputs(self) -> list[AnyMessage]:
        """Messages that came from outside the session's actors (transport, scenario, tests)."""
        internal = {*self.header.actors, "session"}
        return [m for m in self.messages if m.stamp is not None and m.stamp.source not in internal]


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


class Recorder:
    """Writes a recording as the session runs. Used as a bus tap; flushed at every tick so a crash loses at
    most the current window."""

    def __init__(self, path: str | os.PathLike[str], header: RecordingHeader) -> None:
        self.path = str(path)
        try:
            self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise RecordingError(f"cannot write recording {self.path!r}: {exc.strerror}") from exc
        # Writes are synchronous on purpose: they land in the buffered file object (no syscall per message),
        # and the per-tick flush is one small write; an async file API would cost a thread hop per message.
        self._file.write(MAGIC + _frame(msgspec.msgpack.encode(header)))
        self.count = 0

    def __call__(self, message: Message) -> None:
        """Append one stamped message."""
        if self._file is None:
            return
        self._file.write(_frame(encode(message)))
        self.count += 1
        if type(message) is Tick:
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _frames(data: bytes, start: int) -> Iterator[tuple[int, bytes | None, str | None]]:
    """Yield (offset, payload, problem) for each frame; a bad frame ends the iteration with its problem."""
    offset = start
    end = len(data)
    while offset < end:
        if end - offset < _FRAME.size:
            yield offset, None, f"cut off inside a frame header at byte {offset}"
            return
        length, crc = _FRAME.unpack_from(data, offset)
        body = offset + _FRAME.size
        if end - body < length:
            yield offset, None, f"cut off at byte {end}: the frame at byte {offset} needs {length} bytes"
            return
        payload = data[body : body + length]
        if zlib.crc32(payload) != crc:
            yield offset, None, f"checksum mismatch in the frame at byte {offset}"
            return
        yield offset, payload, None
        offset = body + length


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Load a recording; a cut-off or corrupt tail is reported (``truncated``, ``problem``), not raised."""
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RecordingError(f"cannot read recording {path!r}: {exc.strerror}") from exc
    if not data.startswith(MAGIC):
        raise RecordingError(f"{path!r} is not a microturn recording (it does not start with {MAGIC!r})")
    frames = _frames(data, len(MAGIC))
    first = next(frames, None)
    if first is None or first[1] is None:
        raise RecordingError(f"recording {path!r} has no intact header: {first[2] if first else 'empty'}")
    raw_header = msgspec.msgpack.decode(first[1])
    version = raw_header.get("version") if isinstance(raw_header, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise RecordingVersionError(
            f"recording {path!r} is format version {version}; this microturn reads up to version "
            f"{FORMAT_VERSION}: upgrade microturn to read it"
        )
    try:
        header = msgspec.convert(raw_header, RecordingHeader)
    except msgspec.ValidationError as exc:
        raise RecordingError(f"recording {path!r} has an invalid header: {exc}") from None
    messages: list[AnyMessage] = []
    problem = None
    for offset, payload, bad in frames:
        if payload is None:
            problem = bad
            break
        try:
            messages.append(decode(payload))
        except MessageDecodeError as exc:
            problem = f"undecodable message in the frame at byte {offset}: {exc}"
            break
    return Recording(path=path, header=header, messages=messages, truncated=problem is not None, problem=problem)
