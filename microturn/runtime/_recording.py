"""Recordings: an append-only log of every bus message of a session.

Layout (format 2): the magic bytes ``MTREC\\x00``, then frames. A frame is the 4-byte marker ``C1 4D 54 C1``
(``\\xc1MT\\xc1``), a 4-byte little-endian payload length, the payload's 4-byte CRC-32, and the payload. The
first payload is the msgpack :class:`RecordingHeader`; every other is one stamped message, in sequence order.

The marker lets the reader find the next frame after a damaged one: a flipped byte costs one frame, not the
rest of the file. ``0xC1`` is the one byte msgpack never uses, so the marker cannot come from a payload's
structure, only from raw data inside it (bytes, strings, numbers); a candidate frame must also have a sane
length and a matching CRC, so a stray marker inside a payload is skipped. A session that crashes mid-write
leaves a short last frame: the reader reports it as a cut-off tail and keeps everything before it.

Format 1 (no markers) is still read; its reader stops at the first bad frame, as format 1 always did.
Recordings are data: reading one imports nothing and runs nothing (see :mod:`microturn.runtime._replay` for
how replay picks the code that rebuilds a session's actors).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import msgspec

from microturn.messages import AnyMessage, Message, MessageDecodeError, SessionEnded, Tick, decode, encode

from ._errors import RecordingError, RecordingVersionError

__all__ = [
    "FORMAT_VERSION",
    "MAX_FRAME_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_RECORDING_BYTES",
    "Damage",
    "Recorder",
    "Recording",
    "RecordingHeader",
    "read_recording",
]

MAGIC = b"MTREC\x00"
FORMAT_VERSION = 2
MARK = b"\xc1MT\xc1"
_FRAME = struct.Struct("<4sII")
_FRAME_V1 = struct.Struct("<II")

MAX_HEADER_BYTES = 1 << 20
"""The largest header payload read (1 MiB): a header is a few names, the factory's params and some meta."""
MAX_FRAME_BYTES = 256 << 20
"""The largest message payload written or read (256 MiB): a length field above it is damage, not a frame."""
MAX_RECORDING_BYTES = 4 << 30
"""The largest file :func:`read_recording` loads (4 GiB; hours of two-way audio are a few hundred MiB)."""
MIN_TICK_PERIOD, MAX_TICK_PERIOD = 0.001, 60.0
MAX_NAME_CHARS = 256
MAX_ACTORS = 1024
MAX_TICK = 10**9
MAX_SECONDS = 1e9
MODES = ("lockstep", "realtime")


class RecordingHeader(msgspec.Struct, frozen=True, kw_only=True):
    """What a recording needs to be replayed: the session's shape, and how to build its actors again.

    ``factory`` names a known actor factory, ``"package.module:function"``; replay calls ``function(**params)``
    only when that name is registered or on microturn's allow-list (see :func:`microturn.runtime.replay`)."""

    version: int = FORMAT_VERSION
    session_id: str
    mode: str
    tick_period: float
    actors: list[str]
    factory: str | None = None
    params: dict[str, Any] = {}
    meta: dict[str, Any] = {}


class Damage(msgspec.Struct, frozen=True, kw_only=True):
    """One stretch of a recording that could not be read: bytes ``offset`` to ``end`` (the file's size when
    the loss runs to the end), about ``frames`` frames, between the intact messages ``after_seq`` and
    ``resume_seq`` (None where there is none). ``cut`` means the file ends inside a frame (a crash mid-write)."""

    offset: int
    end: int
    frames: int
    reason: str
    after_seq: int | None = None
    resume_seq: int | None = None
    tail: bool = False
    cut: bool = False

    @property
    def lost_bytes(self) -> int:
        """How many bytes of the file this loss covers."""
        return self.end - self.offset

    @property
    def lost_messages(self) -> int | None:
        """How many messages were lost, from the gap in sequence numbers (None when the tail is lost)."""
        if self.resume_seq is None:
            return None
        return self.resume_seq - (self.after_seq or 0) - 1

    def __str__(self) -> str:
        lost = self.lost_messages
        frames = f"{self.frames} frame{'s' if self.frames != 1 else ''}"
        if self.tail and not self.frames:
            after = f" after seq {self.after_seq}" if self.after_seq is not None else ""
            return f"the tail was cut off{after} at byte {self.offset} ({self.reason})"
        if self.tail:
            what = "the tail was cut off" if self.cut else "the tail is damaged"
            after = f" after seq {self.after_seq}" if self.after_seq is not None else ""
            return (f"{what}: {frames}, {self.lost_bytes} bytes lost from byte {self.offset} to the end{after} "
                    f"({self.reason})")
        messages = f"{lost} message{'s' if lost != 1 else ''}" if lost is not None else "unknown messages"
        span = f"seq {(self.after_seq or 0) + 1}..{self.resume_seq - 1}" if lost else "no seq"
        return (f"damaged: {frames}, {self.lost_bytes} bytes lost at bytes {self.offset}..{self.end}, "
                f"{messages} ({span}) ({self.reason})")


class Recording(msgspec.Struct, kw_only=True):
    """A loaded recording: its header, its intact messages, and what was lost (``damage``).

    ``truncated`` is True when anything was lost (a cut-off tail or a damaged frame); ``problem`` says what,
    in one line. Use :attr:`tail_cut_only` to tell a crash's cut-off tail from damage."""

    path: str
    header: RecordingHeader
    messages: list[AnyMessage]
    truncated: bool = False
    problem: str | None = None
    damage: list[Damage] = []

    @property
    def inputs(self) -> list[AnyMessage]:
        """Messages that came from outside the session's actors (transport, scenario, tests)."""
        internal = {*self.header.actors, "session"}
        return [m for m in self.messages if m.stamp is not None and m.stamp.source not in internal]

    @property
    def tail_cut_only(self) -> bool:
        """True when the one loss is a cut-off tail: every message before it is intact."""
        return len(self.damage) == 1 and self.damage[0].cut

    @property
    def lost_bytes(self) -> int:
        """Bytes of the file that could not be read."""
        return sum(d.lost_bytes for d in self.damage)

    @property
    def lost_frames(self) -> int:
        """Frames (about) that could not be read."""
        return sum(d.frames for d in self.damage)


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(MARK, len(payload), zlib.crc32(payload)) + payload


class Recorder:
    """Writes a recording as the session runs. Used as a bus tap; flushed at every tick so a crash loses at
    most the current window."""

    def __init__(self, path: str | os.PathLike[str], header: RecordingHeader) -> None:
        self.path = str(path)
        payload = msgspec.msgpack.encode(header)
        # the header is checked as the reader will check it, so a session never writes a file it cannot read
        _check_header(_decode_header(payload, self.path), self.path, FORMAT_VERSION)
        try:
            self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise RecordingError(f"cannot write recording {self.path!r}: {exc.strerror}") from exc
        # Writes are synchronous on purpose: they land in the buffered file object (no syscall per message),
        # and the per-tick flush is one small write; an async file API would cost a thread hop per message.
        self._file.write(MAGIC + _frame(payload))
        self.count = 0

    def __call__(self, message: Message) -> None:
        """Append one stamped message."""
        if self._file is None:
            return
        payload = encode(message)
        if len(payload) > MAX_FRAME_BYTES:
            raise RecordingError(
                f"cannot record a {type(message).__name__} of {len(payload)} bytes in {self.path!r}: "
                f"a recorded message holds at most {MAX_FRAME_BYTES} bytes"
            )
        self._file.write(_frame(payload))
        self.count += 1
        if type(message) is Tick:
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None


# -- reading ---------------------------------------------------------------------------------------------------


class _Bad(msgspec.Struct, frozen=True):
    """A frame that could not be read at ``offset``: why, and whether the file ended inside it."""

    reason: str
    cut: bool


def _frame_at(data: bytes, offset: int, limit: int) -> tuple[bytes, int] | _Bad:
    """The payload of the format-2 frame at ``offset`` and where the next frame starts, or why there is none."""
    end = len(data)
    if end - offset < _FRAME.size:
        if MARK.startswith(data[offset : offset + 4]):
            return _Bad(f"the file ends inside a frame header at byte {offset}", cut=True)
        return _Bad(f"no frame marker at byte {offset}", cut=False)
    mark, length, crc = _FRAME.unpack_from(data, offset)
    if mark != MARK:
        return _Bad(f"no frame marker at byte {offset}", cut=False)
    return _body(data, offset, offset + _FRAME.size, length, crc, limit)


def _frame_v1_at(data: bytes, offset: int, limit: int) -> tuple[bytes, int] | _Bad:
    """The same for a format-1 frame (length and CRC, no marker)."""
    if len(data) - offset < _FRAME_V1.size:
        return _Bad(f"the file ends inside a frame header at byte {offset}", cut=True)
    length, crc = _FRAME_V1.unpack_from(data, offset)
    return _body(data, offset, offset + _FRAME_V1.size, length, crc, limit)


def _body(data: bytes, offset: int, body: int, length: int, crc: int, limit: int) -> tuple[bytes, int] | _Bad:
    # the length is checked before anything is sliced, so a damaged length field allocates nothing
    if length > limit:
        return _Bad(f"the frame at byte {offset} claims {length} bytes, more than the limit of {limit}", cut=False)
    end = len(data)
    if end - body < length:
        return _Bad(f"the file ends at byte {end}, inside the frame at byte {offset} ({length} bytes)", cut=True)
    payload = data[body : body + length]
    if zlib.crc32(payload) != crc:
        return _Bad(f"checksum mismatch in the frame at byte {offset}", cut=False)
    return payload, body + length


def _resync(data: bytes, offset: int) -> int:
    """The offset of the next intact frame after ``offset``, or the file's size when there is none."""
    at = offset
    while True:
        at = data.find(MARK, at + 1)
        if at < 0:
            return len(data)
        if not isinstance(_frame_at(data, at, MAX_FRAME_BYTES), _Bad):
            return at


_Event = tuple[int, int, bytes | None, Damage | None]


def _frames_v2(data: bytes, start: int) -> Iterator[_Event]:
    """Yield ``(offset, end, payload, None)`` per intact frame and ``(offset, end, None, damage)`` per lost
    stretch, resynchronising on the next marker that starts an intact frame."""
    offset, size = start, len(data)
    while offset < size:
        found = _frame_at(data, offset, MAX_FRAME_BYTES)
        if not isinstance(found, _Bad):
            yield offset, found[1], found[0], None
            offset = found[1]
            continue
        resume = _resync(data, offset)
        tail = resume == size
        frames = max(1, data.count(MARK, offset, resume))
        yield offset, resume, None, Damage(offset=offset, end=resume, frames=frames, reason=found.reason,
                                           tail=tail, cut=tail and found.cut and frames == 1)
        offset = resume


def _frames_v1(data: bytes, start: int) -> Iterator[_Event]:
    """Format 1 has no markers: a bad frame loses the rest of the file."""
    offset, size = start, len(data)
    while offset < size:
        found = _frame_v1_at(data, offset, MAX_FRAME_BYTES)
        if isinstance(found, _Bad):
            reason = found.reason + ("" if found.cut else " (format 1 cannot resynchronise)")
            yield offset, size, None, Damage(offset=offset, end=size, frames=1, reason=reason, tail=True,
                                             cut=found.cut)
            return
        yield offset, found[1], found[0], None
        offset = found[1]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _decode_header(payload: bytes, path: str) -> Any:
    if len(payload) > MAX_HEADER_BYTES:
        raise RecordingError(f"recording {path!r}: header of {len(payload)} bytes is over the limit of "
                             f"{MAX_HEADER_BYTES}")
    try:
        return msgspec.msgpack.decode(payload)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise RecordingError(f"recording {path!r}: the header is not msgpack: {exc}") from None


def _check_header(raw: Any, path: str, layout: int) -> RecordingHeader:
    """Check every header field, naming the field and the value that is wrong."""

    def bad(field: str, problem: str, value: Any = None) -> RecordingError:
        shown = _short(raw.get(field) if value is None else value)
        return RecordingError(f"recording {path!r}: header field {field!r} {problem} (value {shown})")

    def name(field: str, value: Any, optional: bool = False) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str):
            raise bad(field, "must be a string", value)
        if len(value) > MAX_NAME_CHARS:
            raise RecordingError(f"recording {path!r}: header field {field!r} is {len(value)} characters long, "
                                 f"more than {MAX_NAME_CHARS} (value {_short(value)})")

    if not isinstance(raw, dict):
        raise RecordingError(f"recording {path!r}: the header must be a map, got {type(raw).__name__} "
                             f"{_short(raw)}")
    version = raw.get("version", 1)
    if type(version) is not int or version < 1:
        raise bad("version", "must be a format version >= 1")
    if version > FORMAT_VERSION:
        raise RecordingVersionError(
            f"recording {path!r} is format version {version}; this microturn reads up to version "
            f"{FORMAT_VERSION}: upgrade microturn to read it"
        )
    if version != layout:
        raise bad("version", f"does not match the file's frame layout (format {layout})")
    for field in ("session_id", "mode", "tick_period", "actors"):
        if field not in raw:
            raise RecordingError(f"recording {path!r}: header field {field!r} is missing")
    name("session_id", raw["session_id"])
    if raw["mode"] not in MODES:
        raise bad("mode", f"must be one of {', '.join(MODES)}")
    period = raw["tick_period"]
    if type(period) not in (int, float) or not math.isfinite(period):
        raise bad("tick_period", "must be a finite number of seconds")
    if not MIN_TICK_PERIOD <= period <= MAX_TICK_PERIOD:
        raise bad("tick_period", f"must be between {MIN_TICK_PERIOD} and {MAX_TICK_PERIOD} seconds")
    actors = raw["actors"]
    if not isinstance(actors, list):
        raise bad("actors", "must be a list of actor names")
    if len(actors) > MAX_ACTORS:
        raise RecordingError(f"recording {path!r}: header field 'actors' names {len(actors)} actors, more "
                             f"than {MAX_ACTORS}")
    for i, actor in enumerate(actors):
        name(f"actors[{i}]", actor)
    name("factory", raw.get("factory"), optional=True)
    for field in ("params", "meta"):
        value = raw.get(field, {})
        if not isinstance(value, dict):
            raise bad(field, "must be a map")
        for key in value:
            if not isinstance(key, str):
                raise RecordingError(f"recording {path!r}: header field {field!r} has a key that is not a "
                                     f"string: {_short(key)}")
    try:
        return msgspec.convert(raw, RecordingHeader)
    except msgspec.ValidationError as exc:  # the checks above leave nothing for this; kept as a backstop
        raise RecordingError(f"recording {path!r} has an invalid header: {exc}") from None


def _check_stamp(message: AnyMessage, last_seq: int | None) -> str | None:
    """Why a decoded message cannot stand in a recording (no stamp, out of order, absurd time), or None."""
    stamp = message.stamp
    if stamp is None:
        return f"a {type(message).__name__} without a stamp"
    if last_seq is not None and stamp.seq <= last_seq:
        return f"seq {stamp.seq} after seq {last_seq}: out of order"
    if not 0 <= stamp.seq <= 1 << 62:
        return f"seq {stamp.seq} out of range"
    if not 0 <= stamp.tick <= MAX_TICK:
        return f"tick {stamp.tick} out of range 0..{MAX_TICK}"
    if not (math.isfinite(stamp.time) and 0 <= stamp.time <= MAX_SECONDS):
        return f"session time {stamp.time!r} out of range 0..{MAX_SECONDS:g} s"
    return None


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Load a recording. Damage after the header (a cut-off tail, a corrupt frame) is reported in ``damage``
    and the reader carries on with the next intact frame; a missing or bad header, or a file that is not a
    recording, raises :class:`RecordingError`. Imports and runs nothing the file names."""
    path = str(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > MAX_RECORDING_BYTES:
                raise RecordingError(f"recording {path!r} is {size} bytes, more than the limit of "
                                     f"{MAX_RECORDING_BYTES}")
            data = file.read(MAX_RECORDING_BYTES + 1)
    except OSError as exc:
        raise RecordingError(f"cannot read recording {path!r}: {exc.strerror}") from exc
    if len(data) > MAX_RECORDING_BYTES:  # it grew while we read it
        raise RecordingError(f"recording {path!r} is more than {MAX_RECORDING_BYTES} bytes")
    if not data.startswith(MAGIC):
        raise RecordingError(f"{path!r} is not a microturn recording (it does not start with {MAGIC!r})")
    start = len(MAGIC)
    if start == len(data):
        raise RecordingError(f"recording {path!r} has no header: the file ends after the magic bytes")
    layout = 2 if data.startswith(MARK, start) else 1
    first = (_frame_at if layout == 2 else _frame_v1_at)(data, start, MAX_HEADER_BYTES)
    if isinstance(first, _Bad):
        raise RecordingError(f"recording {path!r} has no intact header: {first.reason}")
    header = _check_header(_decode_header(first[0], path), path, layout)

    messages: list[AnyMessage] = []
    damage: list[Damage] = []
    pending: Damage | None = None  # a loss whose resume_seq is the next intact message's
    last_seq: int | None = None
    for offset, end, payload, loss in (_frames_v2 if layout == 2 else _frames_v1)(data, first[1]):
        if loss is None:
            assert payload is not None
            try:
                message = decode(payload)
            except MessageDecodeError as exc:
                why = f"undecodable message in the frame at byte {offset}: {exc}"
            except RecursionError:  # msgspec's guard against deep nesting, raised past MessageDecodeError
                why = f"undecodable message in the frame at byte {offset}: nested too deeply"
            else:
                why = _check_stamp(message, last_seq)
                if why is None:
                    assert message.stamp is not None
                    if pending is not None:
                        damage.append(msgspec.structs.replace(pending, resume_seq=message.stamp.seq))
                        pending = None
                    last_seq = message.stamp.seq
                    messages.append(message)
                    continue
                why = f"the frame at byte {offset} holds {why}"
            loss = Damage(offset=offset, end=end, frames=1, reason=why, tail=end == len(data))
        if pending is None:
            pending = msgspec.structs.replace(loss, after_seq=last_seq)
        else:  # losses with no intact message between them are one stretch
            pending = msgspec.structs.replace(pending, end=loss.end, frames=pending.frames + loss.frames,
                                              tail=loss.tail, cut=False)
    if pending is not None:
        damage.append(pending)
    if not (damage and damage[-1].tail) and not (messages and type(messages[-1]) is SessionEnded):
        # every session's last word is SessionEnded: without it the file was cut, here at a frame boundary
        size = len(data)
        damage.append(Damage(offset=size, end=size, frames=0, after_seq=last_seq, tail=True, cut=True,
                             reason="no SessionEnded: the session never closed (a crash, or a cut between frames)"))
    problem = "; ".join(str(d) for d in damage[:3]) + (f"; and {len(damage) - 3} more" if len(damage) > 3 else "")
    return Recording(path=path, header=header, messages=messages, truncated=bool(damage), problem=problem or None,
                     damage=damage)
