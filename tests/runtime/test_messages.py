"""The message catalogue: round trips, the one error type, and decoder fuzzing."""

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.messages import (
    MESSAGE_TYPES,
    ControlMessage,
    Delegate,
    Interrupt,
    MessageDecodeError,
    OutputChunk,
    Stamp,
    SystemMessage,
    Tick,
    UserAudio,
    decode,
    encode,
)


def test_round_trip_keeps_type_fields_and_stamp():
    stamp = Stamp(tick=3, seq=17, source="perception", time=0.6)
    for message in [
        Tick(tick=3, stamp=stamp),
        UserAudio(pcm=b"\x00\x01" * 10, sample_rate=48000, channels=2),
        OutputChunk(tick=4, generation=2, text="hi", controls=["speak"]),
        Delegate(task_id="t1", goal="look it up"),
        Interrupt(generation=5, stamp=stamp),
    ]:
        assert decode(encode(message)) == message


def test_messages_are_frozen_and_kw_only():
    tick = Tick(tick=1)
    with pytest.raises(AttributeError):
        tick.tick = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Tick(1)  # type: ignore[misc]


def test_kinds_are_distinguished():
    assert issubclass(MESSAGE_TYPES["Interrupt"], ControlMessage)
    assert issubclass(MESSAGE_TYPES["Cancel"], ControlMessage)
    assert issubclass(MESSAGE_TYPES["Tick"], SystemMessage)
    assert not issubclass(MESSAGE_TYPES["UserText"], (ControlMessage, SystemMessage))


def test_wrong_field_type_names_field_and_value():
    with pytest.raises(MessageDecodeError) as info:
        decode(msgspec.msgpack.encode({"type": "Tick", "tick": "seven"}))
    assert info.value.field == "$.tick"
    assert info.value.value == "seven"
    assert "'seven'" in str(info.value) and "$.tick" in str(info.value)


def test_unknown_message_type_is_named():
    with pytest.raises(MessageDecodeError) as info:
        decode(msgspec.msgpack.encode({"type": "Teleport", "to": "mars"}))
    assert info.value.field == "$.type"
    assert info.value.value == "Teleport"


def test_nested_bad_value_is_found():
    bad = {"type": "OutputChunk", "tick": 1, "generation": 0, "controls": ["speak", 7]}
    with pytest.raises(MessageDecodeError) as info:
        decode(msgspec.msgpack.encode(bad))
    assert info.value.field == "$.controls[1]"
    assert info.value.value == 7


def test_missing_tag_is_named():
    with pytest.raises(MessageDecodeError) as info:
        decode(msgspec.msgpack.encode({"tick": 1}))
    assert info.value.field == "$.type"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_the_one_error(data):
    try:
        decode(data)
    except MessageDecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    ),
    st.sampled_from([None, *MESSAGE_TYPES]),
)
def test_random_msgpack_structures_raise_only_the_one_error(value, tag):
    if tag is not None and isinstance(value, dict):
        value = {**value, "type": tag}
    try:
        decode(msgspec.msgpack.encode(value))
    except MessageDecodeError:
        pass
