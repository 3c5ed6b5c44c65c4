"""The /v1/realtime endpoint driven by the official openai SDK's realtime client over real loopback WebSockets.

The session behind the socket is ``RecordingHandlerDouble`` (a test double: it records what reaches it and
answers ``response.create`` with a ``response.created``), so these tests pin the transport's rules: the SDK can
connect, bad frames get error events and the session goes on, audio arrives resampled, limits hold.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openai")
pytest.importorskip("websockets")

from openai import AsyncOpenAI
from openai.types.realtime import ResponseCreatedEvent
from openai.types.realtime.realtime_response import RealtimeResponse

from microturn.realtime.protocol import new_event_id
from microturn.realtime.server import RealtimeLimits, make_app, realtime_server_in_thread


class RecordingHandlerDouble:
    """Test double of a session: keeps the samples and events it is given; may be told to fail on one type."""

    def __init__(self, log: list[Any], fail_on: str | None = None) -> None:
        self.log = log
        self.fail_on = fail_on

    async def audio(self, samples: np.ndarray, send: Any) -> None:
        """Keep the sample count."""
        self.log.append(("audio", samples.size))

    async def event(self, event: Any, send: Any) -> None:
        """Keep the event; answer response.create."""
        if event.type == self.fail_on:
            raise RuntimeError("handler double told to fail")
        self.log.append(("event", event.type))
        if event.type == "response.create":
            response = RealtimeResponse(id="resp_1", status="in_progress", object="realtime.response")
            await send(ResponseCreatedEvent(type="response.created", event_id=new_event_id(), response=response))

    async def close(self) -> None:
        """Mark the end."""
        self.log.append(("closed", 0))


def _client(url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/v1", api_key="test")


async def _next(conn: Any, kind: str) -> Any:
    async with asyncio.timeout(30):  # a hang fails the test instead of stalling CI; never a latency assertion
        while True:
            event = await conn.recv()
            if event.type == kind:
                return event


def test_the_sdk_client_connects_updates_appends_and_survives_bad_frames() -> None:
    """Through the SDK: session.created, bad frames -> errors naming the field, then the session still works."""
    log: list[Any] = []
    app = make_app(lambda: RecordingHandlerDouble(log))

    async def talk(url: str) -> None:
        async with _client(url).realtime.connect(model="microturn") as conn:
            created = await _next(conn, "session.created")
            assert created.session.model == "microturn"
            await conn.send_raw("this is not json")
            assert (await _next(conn, "error")).error.param == "frame"
            await conn.send_raw(json.dumps({"type": "input_audio_buffer.append", "audio": "%%%", "event_id": "a1"}))
            bad = await _next(conn, "error")
            assert (bad.error.param, bad.error.event_id) == ("audio", "a1")
            await conn.send_raw(json.dumps({"type": "warp.drive"}))
            assert "warp.drive" in (await _next(conn, "error")).error.message
            await conn.session.update(session={"type": "realtime", "instructions": "be brief"})
            updated = await _next(conn, "session.updated")
            assert updated.session.instructions == "be brief" and updated.session.model == "microturn"
            pcm = (np.random.default_rng(7).uniform(-0.3, 0.3, 24000) * 32768).astype("<i2").tobytes()
            for i in range(0, len(pcm), 4800):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 4800]).decode())
            await conn.response.create()
            assert (await _next(conn, "response.created")).response.id == "resp_1"

    with realtime_server_in_thread(app) as url:
        asyncio.run(talk(url))
    heard = sum(n for kind, n in log if kind == "audio")
    assert 16000 - 400 <= heard <= 16000  # one second at 16 kHz, less what the resampler still holds
    assert ("event", "response.create") in log


def test_a_failing_session_ends_alone_and_the_server_takes_the_next() -> None:
    """A handler that raises gets its client a server_error; a new connection is served as before."""
    log: list[Any] = []
    app = make_app(lambda: RecordingHandlerDouble(log, fail_on="response.cancel"))

    async def talk(url: str) -> None:
        async with _client(url).realtime.connect(model="m") as conn:
            await _next(conn, "session.created")
            await conn.response.cancel()
            assert (await _next(conn, "error")).error.type == "server_error"
        async with _client(url).realtime.connect(model="m") as conn:
            await _next(conn, "session.created")
            await conn.response.create()
            await _next(conn, "response.created")

    with realtime_server_in_thread(app) as url:
        asyncio.run(talk(url))
    assert log.count(("closed", 0)) == 2


def test_one_session_over_the_limit_is_refused_with_an_error() -> None:
    """max_sessions=1: the second concurrent client gets an error naming max_sessions; the first carries on."""
    limits = RealtimeLimits(max_sessions=1)
    app = make_app(lambda: RecordingHandlerDouble([]), limits)

    async def talk(url: str) -> None:
        async with _client(url).realtime.connect(model="m") as first:
            await _next(first, "session.created")
            async with _client(url).realtime.connect(model="m") as second:
                assert "max_sessions" in (await _next(second, "error")).error.message
            await first.response.create()
            await _next(first, "response.created")

    with realtime_server_in_thread(app, limits) as url:
        asyncio.run(talk(url))


def test_an_idle_session_is_told_and_closed() -> None:
    """No frame for idle_timeout_s: an error naming idle_timeout_s, then the server closes the socket."""
    limits = RealtimeLimits(idle_timeout_s=0.2)
    app = make_app(lambda: RecordingHandlerDouble([]), limits)

    async def talk(url: str) -> None:
        async with _client(url).realtime.connect(model="m") as conn:
            await _next(conn, "session.created")
            assert "idle_timeout_s" in (await _next(conn, "error")).error.message

    with realtime_server_in_thread(app, limits) as url:
        asyncio.run(talk(url))


@pytest.mark.parametrize("field", ["max_frame_bytes", "max_sessions", "idle_timeout_s"])
def test_limits_must_be_positive(field: str) -> None:
    """A zero limit is refused naming the field."""
    with pytest.raises(ValueError, match=field):
        RealtimeLimits(**{field: 0})
