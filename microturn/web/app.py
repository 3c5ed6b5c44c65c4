"""The web server: the page, and one realtime session per WebSocket (hypercorn on trio with starlette)."""

from __future__ import annotations

import contextlib
import importlib.resources
import itertools
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio

from microturn.assembly import FACTORY, PipelineSpec, build_pipeline
from microturn.http_serving import open_hypercorn
from microturn.log import get_logger
from microturn.messages import DialogState, Interrupt, Playout, SpeechEnded, ToolCall, UserAudio, UserText
from microturn.runtime import Actor, open_session
from microturn.web.wire import (
    AudioIn,
    AudioOut,
    ErrorFrame,
    FrameError,
    Played,
    StateFrame,
    Stop,
    TextIn,
    ToolFrame,
    Words,
    decode_client,
)

__all__ = ["WebActor", "WebLimits", "WebServer", "open_web", "web_main"]

log = get_logger("microturn.web")
_STATIC = {"index.html": "text/html", "app.js": "text/javascript", "worklets.js": "text/javascript"}
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class WebLimits:
    """What one web server accepts: open sessions, frames per second per socket, queued frames to a page."""

    max_sessions: int = 32
    max_frames_per_second: int = 100
    outbox: int = 512

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_frames_per_second", "outbox"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
                raise ValueError(f"{name} = {value!r}: must be an integer in 1..100000")


class WebActor(Actor):
    """The session's side of one page: turns the bus's output into socket frames, the page's input into messages."""

    subscriptions = (Playout, DialogState, SpeechEnded, Interrupt, ToolCall)

    def __init__(self, outbox: trio.MemorySendChannel[bytes], *, name: str = "web") -> None:
        super().__init__(name)
        self.outbox = outbox
        self.dropped = 0
        self.played = 0
        """Samples the page says it has played (its playout acknowledgement)."""

    def send(self, frame: msgspec.Struct) -> None:
        """Queue a frame for the page; a page that does not read is dropped frames, never unbounded memory."""
        try:
            self.outbox.send_nowait(_encoder.encode(frame))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped += 1

    async def handle(self, message: object) -> None:
        """Forward what the page shows and plays."""
        match message:
            case Playout(utterance_id=uid, text=text, pcm=pcm, sample_rate=rate):
                if pcm:
                    self.send(AudioOut(utterance_id=uid, pcm=pcm, sample_rate=rate))
                if text:
                    self.send(Words(role="assistant", text=text, utterance_id=uid))
            case SpeechEnded(utterance_id=uid, reason=reason) if reason == "interrupted":
                self.send(Stop(utterance_id=uid, reason=reason))
            case Interrupt(generation=generation, reason=reason):
                self.send(Stop(utterance_id=-1, reason=reason or f"interrupt {generation}"))
            case DialogState(floor=floor, user=user, assistant=assistant):
                self.send(StateFrame(floor=floor, user=user, assistant=assistant))
            case ToolCall(call_id=call_id, name=tool):
                self.send(ToolFrame(id=call_id, name=tool, status="called"))

    async def inbound(self, frame: AudioIn | TextIn | Played) -> None:
        """One valid frame from the page."""
        match frame:
            case AudioIn(pcm=pcm):
                await self.session.publish(UserAudio(pcm=pcm), source=self.name)
            case TextIn(text=text):
                self.send(Words(role="user", text=text))
                await self.session.publish(UserText(text=text), source=self.name)
            case Played(samples=samples):
                self.played = max(self.played, samples)


class WebServer:
    """The page and its sessions: each socket gets its own pipeline from ``spec`` (realtime clock)."""

    def __init__(self, spec: PipelineSpec | None = None, *, record: str | Path | None = None,
                 limits: WebLimits | None = None, tick_period: float = 0.2,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.spec = spec or PipelineSpec(render_audio=True)
        self.record = Path(record) if record is not None else None
        self.limits = limits or WebLimits()
        self.tick_period = tick_period
        self.clock = clock
        self.sessions = 0
        self._ids = itertools.count(1)
        self.app = self._build_app()

    def _build_app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route, WebSocketRoute

        static = importlib.resources.files("microturn.web") / "static"

        async def page(request: Any) -> Response:
            name = request.path_params.get("name", "index.html")
            if name not in _STATIC:  # only the shipped files: a path never reaches the file system
                return Response("not found", status_code=404)
            return Response((static / name).read_bytes(), media_type=_STATIC[name])

        return Starlette(routes=[Route("/", page), Route("/static/{name}", page),
                                 WebSocketRoute("/ws", self._socket)])

    async def _socket(self, ws: Any) -> None:
        if self.sessions >= self.limits.max_sessions:
            await ws.close(code=1013, reason=f"at most {self.limits.max_sessions} sessions")
            return
        await ws.accept()
        self.sessions += 1
        number = next(self._ids)
        send, receive = trio.open_memory_channel[bytes](self.limits.outbox)
        actor = WebActor(send)
        try:
            actors = build_pipeline(self.spec, extra=[actor], tick_period=self.tick_period)
            record = self.record / f"web-{number:04d}.mtrec" if self.record is not None else None
            if record is not None:
                record.parent.mkdir(parents=True, exist_ok=True)
            async with open_session(actors, mode="realtime", tick_period=self.tick_period,
                                    session_id=f"web-{number}", record=record, factory=FACTORY,
                                    params=msgspec.to_builtins(self.spec)), trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, ws, receive)
                await self._read(ws, actor)
                nursery.cancel_scope.cancel()
        except Exception as exc:
            if type(exc).__name__ != "WebSocketDisconnect":
                log.exception("web_session_failed", session=number)
        finally:
            self.sessions -= 1
            send.close()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _pump(self, ws: Any, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        async for data in receive:
            await ws.send_text(data.decode())

    async def _read(self, ws: Any, actor: WebActor) -> None:
        from starlette.websockets import WebSocketDisconnect

        window, count = self.clock(), 0
        while True:
            try:
                message = await ws.receive()
            except WebSocketDisconnect:
                return
            if message["type"] == "websocket.disconnect":
                return
            now = self.clock()
            if now - window >= 1.0:
                window, count = now, 0
            count += 1
            if count > self.limits.max_frames_per_second:
                actor.send(ErrorFrame(field="rate", value=str(count),
                                      message=f"at most {self.limits.max_frames_per_second} frames a second"))
                continue
            data = message.get("text") if message.get("text") is not None else message.get("bytes") or b""
            try:
                frame = decode_client(data)
            except FrameError as exc:
                actor.send(ErrorFrame(field=exc.field, value=exc.value, message=str(exc)))
                continue
            await actor.inbound(frame)


@contextlib.asynccontextmanager
async def open_web(server: WebServer, host: str = "127.0.0.1", port: int = 8000) -> AsyncIterator[str]:
    """Serve ``server`` with hypercorn on trio while the block runs; yields the base URL (``port=0``: any)."""
    async with open_hypercorn(server.app, host, port, websocket_max_message_size=1 << 20) as url:
        log.info("web_listening", url=url)
        yield url


def web_main(server: WebServer, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM (``microturn web``)."""

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with open_web(server, host, port) as url:
                on_ready(url)
                async for _ in signals:
                    break

    trio.run(main)
