"""The Realtime protocol layer: client frames parsed into the openai SDK's own types, bad frames refused with an
error naming the field, and 24 kHz wire audio resampled to and from the pipeline's 16 kHz whatever the chunking."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("openai")

from openai.types.realtime import (
    ConversationItemCreateEvent,
    ConversationItemTruncateEvent,
    InputAudioBufferAppendEvent,
    ResponseCancelEvent,
    SessionUpdateEvent,
)

from microturn.realtime.protocol import (
    WIRE_RATE,
    FrameError,
    InputAudio,
    OutputAudio,
    error_event,
    parse_client_event,
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def _pcm16_b64(samples: np.ndarray) -> str:
    return base64.b64encode((np.clip(samples, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()).decode()


def test_each_client_event_parses_into_the_sdks_own_type() -> None:
    """What the SDK's own client sends comes back as the SDK's own models, fields intact."""
    frames = {
        SessionUpdateEvent: {"type": "session.update", "session": {"type": "realtime", "instructions": "be brief"}},
        InputAudioBufferAppendEvent: {"type": "input_audio_buffer.append", "audio": _pcm16_b64(np.zeros(240))},
        ResponseCancelEvent: {"type": "response.cancel", "event_id": "e1"},
        ConversationItemTruncateEvent: {
            "type": "conversation.item.truncate", "item_id": "it", "content_index": 0, "audio_end_ms": 1234,
        },
        ConversationItemCreateEvent: {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]},
        },
    }  # fmt: skip
    for cls, frame in frames.items():
        event = parse_client_event(json.dumps(frame))
        assert isinstance(event, cls)
    truncate = parse_client_event(json.dumps(frames[ConversationItemTruncateEvent]))
    assert truncate.audio_end_ms == 1234
    create = parse_client_event(json.dumps(frames[ConversationItemCreateEvent]))
    assert create.item.content[0].text == "hello"


@pytest.mark.parametrize(
    ("frame", "param", "named"),
    [
        ("not json", "frame", "not JSON"),
        ("[1, 2]", "frame", "list"),
        ('{"type": "session.explode"}', "type", "session.explode"),
        ('{"type": "input_audio_buffer.append", "audio": "@@@"}', "audio", "not base64"),
        ('{"type": "input_audio_buffer.append", "audio": "AA=="}', "audio", "odd byte count"),
        ('{"type": "input_audio_buffer.append"}', "audio", "missing"),
        ('{"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": "soon"}',
         "audio_end_ms", "soon"),
    ],
)  # fmt: skip
def test_a_bad_frame_is_an_error_naming_the_field_and_value(frame: str, param: str, named: str) -> None:
    """Each way a frame can be wrong is refused with the field and the value in the error event."""
    with pytest.raises(FrameError) as info:
        parse_client_event(frame)
    assert info.value.param == param
    event = error_event(info.value)
    assert event.type == "error" and event.error.param == param
    assert named in event.error.message


def test_a_huge_frame_is_refused_before_it_is_parsed_and_not_echoed() -> None:
    """The size limit is checked first, and the error stays short (never the megabyte back)."""
    frame = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 5000})
    with pytest.raises(FrameError) as info:
        parse_client_event(frame, max_bytes=1000)
    assert info.value.param == "frame" and "limit of 1000" in str(info.value)
    assert len(error_event(info.value).error.message) < 200


def test_the_event_id_of_a_refused_frame_is_carried_into_the_error() -> None:
    """A client can match an error to the frame it sent."""
    with pytest.raises(FrameError) as info:
        parse_client_event('{"type": "input_audio_buffer.append", "audio": "!", "event_id": "mine"}')
    assert error_event(info.value).error.event_id == "mine"


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), st.dictionaries(st.text(max_size=8),
       st.one_of(st.none(), st.integers(), st.text(max_size=20)), max_size=5).map(json.dumps)))  # fmt: skip
def test_no_frame_raises_anything_but_a_frame_error(frame: str | bytes) -> None:
    """Whatever a client sends, the answer is an event or a FrameError: nothing that would end the session."""
    try:
        parse_client_event(frame)
    except FrameError as exc:
        assert error_event(exc).error.param


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 2000), min_size=1, max_size=12))
def test_input_audio_gives_the_same_16k_samples_whatever_the_chunking(seed: int, cuts: list[int]) -> None:
    """The wire stream resampled in pieces equals it resampled whole, and has 2/3 as many samples."""
    rng = np.random.default_rng(seed)
    wire = rng.uniform(-0.5, 0.5, 6000).astype(np.float32)
    whole = InputAudio()
    expected = np.concatenate([whole.push(_pcm16_b64(wire)), whole.flush()])
    chunked, parts, at = InputAudio(), [], 0
    for cut in cuts:
        parts.append(chunked.push(_pcm16_b64(wire[at : at + cut])))
        at += cut
    parts += [chunked.push(_pcm16_b64(wire[at:])), chunked.flush()]
    got = np.concatenate(parts)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert abs(got.size - wire.size * 16000 // WIRE_RATE) <= 1


def test_output_audio_is_24k_pcm16_deltas_of_the_same_sound() -> None:
    """A 16 kHz tone goes out as response.output_audio.delta events carrying the same tone at 24 kHz."""
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = OutputAudio()
    events = [out.delta(tone[i : i + 3200], response_id="r", item_id="it") for i in range(0, tone.size, 3200)]
    events.append(out.finish(response_id="r", item_id="it"))
    events = [e for e in events if e is not None]
    assert events and all(e.type == "response.output_audio.delta" and e.response_id == "r" for e in events)
    pcm = np.concatenate([np.frombuffer(base64.b64decode(e.delta), "<i2") for e in events]) / 32768
    assert abs(pcm.size - 24000) <= 1
    spectrum = np.abs(np.fft.rfft(pcm))
    assert abs(np.argmax(spectrum) * 24000 / pcm.size - 440) < 2


def test_an_append_longer_than_one_message_may_be_is_an_audio_error() -> None:
    """More than ten seconds in one append is refused naming the audio field; the stream still works after."""
    audio = InputAudio()
    with pytest.raises(FrameError) as info:
        audio.push(_pcm16_b64(np.zeros(WIRE_RATE * 11, np.float32)))
    assert info.value.param == "audio"
    assert audio.push(_pcm16_b64(np.zeros(2400, np.float32))).size + audio.flush().size == 1600
