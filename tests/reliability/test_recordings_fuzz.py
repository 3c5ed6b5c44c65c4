"""Fuzzing the recording reader: crafted files (frames with valid CRCs around random payloads, random bytes,
stray markers, lying length fields, odd headers) only ever give a Recording or a RecordingError, the messages
it keeps are stamped and in order, and reading imports nothing."""

import importlib
import struct
import sys
import zlib
from contextlib import contextmanager
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microturn.messages import MESSAGE_TYPES, Stamp, UserText, encode
from microturn.runtime import KNOWN_FACTORIES, Recording, RecordingError, read_recording, resolve_factory
from microturn.runtime._recording import MAGIC, MARK, _frame

HEADER = {"version": 2, "session_id": "s", "mode": "lockstep", "tick_period": 0.2, "actors": ["a"]}

plain = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20) | st.binary(
    max_size=20
)
values = st.recursive(plain, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4), max_leaves=12)
stamps = st.builds(
    Stamp,
    tick=st.integers(-5, 2**40),
    seq=st.integers(-5, 2**40),
    source=st.text(max_size=10),
    time=st.floats(allow_nan=True, allow_infinity=True),
)


@st.composite
def messages(draw) -> bytes:
    """The msgpack of a real message with a random stamp, or of a map tagged with a real message type."""
    if draw(st.booleans()):
        stamp = draw(st.none() | stamps)
        return encode(UserText(text=draw(st.text(max_size=20)), stamp=stamp))
    fields = draw(st.dictionaries(st.sampled_from(["stamp", "tick", "text", "data", "generation", "x"]), values,
                                  max_size=4))
    return msgspec.msgpack.encode({"type": draw(st.sampled_from(sorted(MESSAGE_TYPES))), **fields})


@st.composite
def headers(draw) -> bytes:
    """A valid header with some fields replaced by random values, random msgpack, or random bytes."""
    kind = draw(st.sampled_from(["mutated", "value", "bytes"]))
    if kind == "mutated":
        keys = ["version", "session_id", "mode", "tick_period", "actors", "factory", "params", "meta"]
        change = draw(st.dictionaries(st.sampled_from(keys), values, max_size=3))
        return msgspec.msgpack.encode({**HEADER, **change})
    if kind == "value":
        return msgspec.msgpack.encode(draw(values))
    return draw(st.binary(max_size=64))


def lying_frame(length: int, crc: int, body: bytes) -> bytes:
    return MARK + struct.pack("<II", length, crc) + body


def deep(depth: int) -> bytes:
    """A ToolResult whose ``value`` (typed Any) nests ``depth`` lists deep."""
    head = b"\x84\xa4type\xaaToolResult\xa7call_id\xa1x\xa2ok\xc3\xa5value"
    return head + b"\x91" * depth + b"\x01"


chunks = st.one_of(
    st.integers(1, 300_000).map(lambda n: _frame(deep(n))),
    st.binary(max_size=64).map(_frame),
    values.map(lambda v: _frame(msgspec.msgpack.encode(v))),
    messages().map(_frame),
    st.binary(max_size=40),
    st.binary(max_size=16).map(lambda b: MARK + b),
    st.builds(lying_frame, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=32)),
    st.binary(max_size=32).map(lambda b: lying_frame(len(b), zlib.crc32(b) ^ 1, b)),
)


@contextmanager
def no_imports():
    """Fail the test if anything is imported while the block runs (sys.modules unchanged, import_module unused)."""
    before = set(sys.modules)

    def refuse(name, *args, **kwargs):
        raise AssertionError(f"imported {name!r} while reading a recording")

    with mock.patch.object(importlib, "import_module", refuse):
        yield
    assert set(sys.modules) == before


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "fuzz.mtrec"


def read_or_refuse(path, blob: bytes) -> Recording | None:
    path.write_bytes(blob)
    with no_imports():
        try:
            rec = read_recording(path)
        except RecordingError as exc:
            assert str(exc)
            return None
    seqs = [m.stamp.seq for m in rec.messages]
    assert all(m.stamp is not None for m in rec.messages) and seqs == sorted(set(seqs))
    assert rec.truncated == bool(rec.damage) and (rec.problem is None) == (not rec.damage)
    for loss in rec.damage:
        assert 0 <= loss.offset <= loss.end <= len(blob) and str(loss)
    return rec


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers(), body=st.lists(chunks, max_size=12))
def test_crafted_files_give_a_recording_or_a_recording_error(scratch, header, body):
    read_or_refuse(scratch, MAGIC + _frame(header) + b"".join(body))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.lists(chunks, max_size=12))
def test_frames_after_a_valid_header_never_escape_as_another_error(scratch, body):
    rec = read_or_refuse(scratch, MAGIC + _frame(msgspec.msgpack.encode(HEADER)) + b"".join(body))
    assert rec is not None  # the header is valid: whatever follows is damage, not an error


@settings(max_examples=200, deadline=None, derandomize=True)
@given(blob=st.binary(max_size=200))
def test_random_bytes_after_the_magic_are_refused_or_read(scratch, blob):
    read_or_refuse(scratch, MAGIC + blob)
    read_or_refuse(scratch, MAGIC + MARK + blob)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(name=st.text(max_size=60) | st.sampled_from(["os:system", "subprocess:run", "builtins:eval",
                                                     "microturn.demo:build_x", "microturn.demo", ":"]))
def test_an_unknown_factory_name_is_refused_without_importing(name):
    if name in KNOWN_FACTORIES:
        return
    with no_imports(), pytest.raises(RecordingError, match="unknown actor factory"):
        resolve_factory(name)
