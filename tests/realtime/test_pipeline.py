"""A spoken exchange over the Realtime protocol: the official openai SDK client against a real microturn pipeline
(embedded model, realtime clock) served on loopback. The user's question is espeak-ng speech appended as
24 kHz pcm16; the assistant's answer must come back as audio deltas and a transcript, ending in response.done.
Only generous hang bounds on real time; nothing about how fast this machine is."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openai")
pytest.importorskip("websockets")

from openai import AsyncOpenAI

from microturn.audio import espeak_available
from microturn.audio.pcm import float_to_pcm16, pcm16_to_float
from microturn.audio.resample import StreamResampler
from microturn.audio.synth import synthesize
from microturn.realtime.pipeline import pipeline_factory
from microturn.realtime.server import make_app, realtime_server_in_thread

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def _wire_chunks(samples16k: np.ndarray, chunk_s: float = 0.1) -> list[str]:
    """16 kHz float speech as base64 24 kHz pcm16 append payloads of ``chunk_s`` each."""
    up = StreamResampler(16000, 24000)
    wire = np.concatenate([up.push(samples16k), up.flush()])
    step = int(24000 * chunk_s)
    return [base64.b64encode(float_to_pcm16(np.clip(wire[i:i + step], -1.0, 32767 / 32768))).decode("ascii")
            for i in range(0, wire.size, step)]


async def _until_done(conn: Any, on_event: Callable[[Any], Awaitable[None]] | None = None) -> list[Any]:
    """Every server event up to and including ``response.done``; ``on_event`` sees each as it arrives."""
    events: list[Any] = []
    async with asyncio.timeout(120):  # a hang bound only
        async for event in conn:
            events.append(event)
            if on_event is not None:
                await on_event(event)
            if event.type == "response.done":
                return events
    return events


async def _exchange(url: str, chunks: list[str]) -> list[Any]:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="test")
    async with client.realtime.connect(model="microturn") as conn:
        for chunk in chunks:  # all at once: the pipeline plays late audio window by window, dropping none
            await conn.input_audio_buffer.append(audio=chunk)
        return await _until_done(conn)


def test_sdk_client_completes_a_spoken_exchange(tmp_path: Any) -> None:
    speech = pcm16_to_float(synthesize("hello, what time is it?", cache_dir=tmp_path))
    silence = np.zeros(16000 * 3, dtype=np.float32)  # the end of the user's turn
    app = make_app(pipeline_factory())
    with realtime_server_in_thread(app) as url:
        events = asyncio.run(_exchange(url, _wire_chunks(np.concatenate([speech, silence]))))
    types = [e.type for e in events]
    assert "input_audio_buffer.speech_started" in types
    assert "input_audio_buffer.speech_stopped" in types
    assert types.index("input_audio_buffer.speech_started") < types.index("response.created")
    audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta").strip()
    assert transcript, types
    assert len(audio) > 2 * 2400, "at least 0.1 s of 24 kHz pcm16 answer audio"
    assert np.abs(np.frombuffer(audio, "<i2")).max() > 300, "the answer audio is not silence"
    assert events[-1].response.status == "completed"


async def _cancelled(url: str, chunks: list[str]) -> list[Any]:
    """Ask, and cancel the answer at its first audio: the response must end cancelled."""
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="test")
    sent = False

    async def cancel_at_first_words(event: Any) -> None:
        nonlocal sent
        if event.type == "response.output_audio_transcript.delta" and not sent:
            sent = True
            await conn.response.cancel()

    async with client.realtime.connect(model="microturn") as conn:
        for chunk in chunks:
            await conn.input_audio_buffer.append(audio=chunk)
        return await _until_done(conn, cancel_at_first_words)


def test_response_cancel_ends_the_answer_cancelled(tmp_path: Any) -> None:
    speech = pcm16_to_float(synthesize("hello, what time is it?", cache_dir=tmp_path))
    silence = np.zeros(16000 * 3, dtype=np.float32)
    app = make_app(pipeline_factory())
    with realtime_server_in_thread(app) as url:
        events = asyncio.run(_cancelled(url, _wire_chunks(np.concatenate([speech, silence]))))
    assert events[-1].type == "response.done"
    assert events[-1].response.status == "cancelled"
    assert not any(e.type == "error" for e in events), [e for e in events if e.type == "error"]


async def _typed(url: str, text: str) -> list[Any]:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="test")
    async with client.realtime.connect(model="microturn") as conn:
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
        return await _until_done(conn)


def test_typed_text_gets_a_spoken_answer() -> None:
    app = make_app(pipeline_factory())
    with realtime_server_in_thread(app) as url:
        events = asyncio.run(_typed(url, "hello, what time is it?"))
    types = [e.type for e in events]
    assert "response.created" in types and events[-1].response.status == "completed"
    assert "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta").strip(), types
