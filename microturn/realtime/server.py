"""The Realtime WebSocket endpoint: ``/v1/realtime``, one session per connection, on hypercorn-on-trio + starlette.

The transport and its rules live here; what a session *does* with the events is a :class:`SessionHandler` made
per connection by the factory the server is given (the microturn pipeline adapter is one such handler; tests use
a named double). The rules, whatever the handler:

* on connect the server sends ``session.created``; ``session.update`` is merged and answered ``session.updated``;
* a frame that cannot be used gets an ``error`` event naming the field and the value, and the session goes on;
* ``input_audio_buffer.append`` audio (24 kHz PCM16) reaches the handler as 16 kHz float samples;
* limits (:class:`RealtimeLimits`): frame size, number of sessions (one over gets an error and close code 1013),
  idle timeout (no frame for that long: an error, then close);
* a handler that fails ends its own session with an error event, never the server.

The SDK's client (``AsyncOpenAI(base_url="http://HOST:PORT/v1").realtime.connect(model=...)``) dials
``ws://HOST:PORT/v1/realtime?model=...``, which is this endpoint.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import trio

from microturn.http_serving import open_hypercorn
from microturn.log import get_logger
from microturn.realtime.protocol import (
    MAX_FRAME_BYTES,
    FrameError,
    InputAudio,
    error_event,
    new_event_id,
    parse_client_event,
)
from microturn.runtime import server_in_thread

try:  # optional: the realtime and serve extras
    from openai.types.realtime import RealtimeSessionCreateRequest, SessionCreatedEvent, SessionUpdatedEvent
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("microturn.realtime needs the realtime extra: pip install 'microturn[realtime]'") from exc

__all__ = [
    "RealtimeLimits", "SessionHandler", "make_app", "open_realtime_server", "realtime_server_in_thread",
    "serve_realtime",
]

log = get_logger(__name__)

Send = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class RealtimeLimits:
    """Bounds on what one client may cost: frame bytes, open sessions, seconds with no frame."""

    max_frame_bytes: int = MAX_FRAME_BYTES
    max_sessions: int = 8
    idle_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "max_sessions", "idle_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value <= 1e9):
                raise ValueError(f"RealtimeLimits.{name}={value!r}: expected a positive number up to 1e9")


class SessionHandler(Protocol):
    """What one connection's session does with its events (the pipeline adapter, or a test double)."""

    async def audio(self, samples: np.ndarray, send: Send) -> None:
        """The next 16 kHz float samples of the user's audio."""

    async def event(self, event: Any, send: Send) -> None:
        """Any other parsed client event (openai.types.realtime models), session.update excepted."""

    async def close(self) -> None:
        """The connection has ended; release what the session holds."""


def make_app(factory: Callable[[], SessionHandler], limits: RealtimeLimits | None = None) -> Any:
    """The starlette app serving ``/v1/realtime`` (and ``/realtime``) with sessions from ``factory``."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    limits = limits or RealtimeLimits()
    open_sessions = [0]

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        sending = trio.Lock()

        async def send(event: Any) -> None:
            # one writer at a time: a handler's task and this loop both send, and hypercorn's trio WebSocket
            # raises BusyResourceError on two concurrent sends
            async with sending:
                await ws.send_text(event.model_dump_json(exclude_none=True))

        async def end(code: int) -> None:
            # Let the client close first: hypercorn 0.17's trio WebSocket can send our close frame and its reply
            # to the client's close from two tasks at once (trio.BusyResourceError), which takes the whole server
            # down. Waiting for the client's close (bounded) avoids that race for any client that closes on error.
            with trio.move_on_after(min(5.0, limits.idle_timeout_s)):
                while (await ws.receive())["type"] != "websocket.disconnect":
                    pass
                return
            await ws.close(code=code)

        if open_sessions[0] >= limits.max_sessions:
            await send(error_event(f"server busy: {limits.max_sessions} sessions open (max_sessions)"))
            await end(1013)
            return
        open_sessions[0] += 1
        session = RealtimeSessionCreateRequest(type="realtime", model=ws.query_params.get("model"))
        handler = factory()
        audio = InputAudio()

        async def frames() -> None:
            nonlocal session
            await send(SessionCreatedEvent(type="session.created", event_id=new_event_id(), session=session))
            while True:
                with trio.move_on_after(limits.idle_timeout_s) as idle:
                    message = await ws.receive()
                if idle.cancelled_caught:
                    await send(error_event(f"no frame for {limits.idle_timeout_s} s (idle_timeout_s): closing"))
                    await ws.close(code=1000)
                    return
                if message["type"] == "websocket.disconnect":
                    return
                frame = message.get("text") if message.get("text") is not None else message.get("bytes", b"")
                try:
                    event = parse_client_event(frame, max_bytes=limits.max_frame_bytes)
                    if event.type == "session.update":
                        merged = {**session.model_dump(exclude_none=True),
                                  **event.session.model_dump(exclude_none=True)}  # fmt: skip
                        session = RealtimeSessionCreateRequest.model_validate(merged)
                        await send(
                            SessionUpdatedEvent(type="session.updated", event_id=new_event_id(), session=session)
                        )
                    elif event.type == "input_audio_buffer.append":
                        samples = audio.push(event.audio)
                        if samples.size:
                            await handler.audio(samples, send)
                    else:
                        await handler.event(event, send)
                except FrameError as exc:
                    log.info("realtime_frame_refused", param=exc.param, problem=exc.problem)
                    await send(error_event(exc))
        try:
            async with trio.open_nursery() as nursery:
                if hasattr(handler, "run"):  # a handler with its own task (a pipeline) runs while the socket is open
                    await nursery.start(handler.run, send)
                try:
                    await frames()
                finally:
                    nursery.cancel_scope.cancel()
        except Exception as exc:  # noqa: BLE001 - one session's failure ends that session, never the server
            while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]  # the nursery wraps what the frame loop or the handler raised
            if isinstance(exc, WebSocketDisconnect):
                return
            log.error("realtime_session_failed", error=repr(exc))
            with contextlib.suppress(Exception):
                await send(error_event(f"session failed: {type(exc).__name__}: {exc}", kind="server_error"))
                await end(1011)
        finally:
            open_sessions[0] -= 1
            await handler.close()

    return Starlette(routes=[WebSocketRoute("/v1/realtime", endpoint), WebSocketRoute("/realtime", endpoint)])


@contextlib.asynccontextmanager
async def open_realtime_server(app: Any, host: str = "127.0.0.1", port: int = 0, limits: RealtimeLimits | None = None):
    """Serve ``app`` with hypercorn on trio while the block runs; yields the base ``http://`` URL."""
    limits = limits or RealtimeLimits()
    # hypercorn drops the connection past this; under it, our own limit answers with an error event instead
    async with open_hypercorn(app, host, port, websocket_max_message_size=4 * limits.max_frame_bytes) as url:
        yield url


@contextlib.contextmanager
def realtime_server_in_thread(app: Any, limits: RealtimeLimits | None = None) -> Iterator[str]:
    """Run ``app`` on loopback in a thread with its own trio loop while the block runs; yields the base URL.
    For tests and the benchmark, whose clients (the openai SDK) run on asyncio."""
    with server_in_thread(lambda: open_realtime_server(app, limits=limits), name="microturn realtime server",
                          join_timeout=10) as url:
        yield url

def serve_realtime(app: Any, *, host: str = "127.0.0.1", port: int = 0, limits: RealtimeLimits | None = None,
                   on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` until SIGINT or SIGTERM (main thread only); ``on_ready(ws_url)`` once listening."""

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with open_realtime_server(app, host=host, port=port, limits=limits) as url:
                if on_ready is not None:
                    on_ready(url.replace("http://", "ws://", 1) + "/v1/realtime")
                async for signum in signals:
                    log.info("realtime_stopping", signal=signal.Signals(signum).name)
                    return

    trio.run(main)
