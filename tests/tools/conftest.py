"""Loopback HTTP servers for the tool and reasoner tests: real sockets on 127.0.0.1, served by hypercorn on
trio with small starlette apps (no hand-written HTTP). Each server lives for one test and stops itself.

- ``web_server``: pages for ``http_get`` (a small page, big ones with and without a declared length, a
  redirect off the allow-list, one that never answers).
- ``openai_double``: :class:`OpenAITestDouble`, a test double of an OpenAI-compatible chat-completions
  endpoint. Each request is answered by the next scripted reply — streamed text, streamed tool calls (name
  and arguments cut into fragments), a malformed chunk, a stream that breaks off, an HTTP error, or silence
  — and every request (headers and JSON body) is kept for the test to inspect.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared loopback server
from loopback import serving

# --- a web server for http_get -------------------------------------------------------------------------------

BIG = b"x" * 10_000


async def _hello(request: Request) -> Response:
    return PlainTextResponse("hello from the loopback server")


async def _big(request: Request) -> Response:
    return Response(BIG, media_type="text/plain")  # declares Content-Length


async def _big_stream(request: Request) -> Response:
    async def chunks():
        for _ in range(10):
            yield b"y" * 1000

    return StreamingResponse(chunks(), media_type="text/plain")  # chunked: no declared length


async def _away(request: Request) -> Response:
    return RedirectResponse("http://elsewhere.invalid/secret", status_code=302)


async def _inside(request: Request) -> Response:
    return RedirectResponse("/hello", status_code=302)


async def _never(request: Request) -> Response:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def _missing(request: Request) -> Response:
    return PlainTextResponse("no such page", status_code=404)


WEB_APP = Starlette(
    routes=[
        Route("/hello", _hello),
        Route("/big", _big),
        Route("/big-stream", _big_stream),
        Route("/redirect-away", _away),
        Route("/redirect-inside", _inside),
        Route("/never", _never),
        Route("/missing", _missing),
    ]
)


@pytest.fixture
async def web_server() -> AsyncIterator[str]:
    """The base URL (``http://127.0.0.1:<port>``) of a loopback web server."""
    async with serving(WEB_APP) as url:
        yield url


# --- a test double of an OpenAI-compatible endpoint ---------------------------------------------------------


def text_reply(text: str, *, pieces: int = 3) -> list[str]:
    """SSE data lines that stream ``text`` in ``pieces`` content deltas, then stop, then [DONE]."""
    words = text.split(" ")
    step = max(1, len(words) // pieces)
    parts = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
    parts = [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]
    lines = [_chunk({"role": "assistant", "content": ""})]
    lines += [_chunk({"content": p}) for p in parts]
    lines.append(_chunk({}, finish="stop"))
    lines.append("[DONE]")
    return lines


def tool_reply(*calls: tuple[str, str], fragment: int = 5) -> list[str]:
    """SSE data lines that request tool ``calls`` ((name, arguments JSON text), ...) the way servers stream
    them: the id and name first, then the arguments in fragments, each delta naming its call's index."""
    lines = [_chunk({"role": "assistant", "content": None})]
    for index, (name, arguments) in enumerate(calls):
        function = {"name": name, "arguments": ""}
        head = {"index": index, "id": f"call_{index}_x", "type": "function", "function": function}
        lines.append(_chunk({"tool_calls": [head]}))
        for i in range(0, len(arguments), fragment):
            piece = {"index": index, "function": {"arguments": arguments[i : i + fragment]}}
            lines.append(_chunk({"tool_calls": [piece]}))
    lines.append(_chunk({}, finish="tool_calls"))
    lines.append("[DONE]")
    return lines


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "test-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


class Reply:
    """One scripted answer of the double."""

    def __init__(
        self,
        lines: list[str] | None = None,
        *,
        status: int = 200,
        body: Any = None,
        abort_after: int | None = None,
        never: bool = False,
    ) -> None:
        self.lines = lines or []
        self.status = status
        self.body = body
        self.abort_after = abort_after
        self.never = never


class OpenAITestDouble:
    """Test double of an OpenAI-compatible chat-completions endpoint (see the module docs)."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])
        self.url = ""

    def script(self, *replies: Reply | list[str]) -> None:
        """Queue the answers to the next requests, in order."""
        self.replies.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    async def _complete(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "json": body})
        if not self.replies:
            return JSONResponse({"error": {"message": "the test double has no reply scripted"}}, status_code=500)
        reply = self.replies.pop(0)
        if reply.never:
            await anyio.sleep_forever()
        if reply.status != 200:
            return JSONResponse(reply.body, status_code=reply.status)

        async def stream():
            for i, line in enumerate(reply.lines):
                if reply.abort_after is not None and i == reply.abort_after:
                    raise RuntimeError("the test double drops the connection mid-stream")
                yield f"data: {line}\n\n".encode()
                await anyio.sleep(0)

        return StreamingResponse(stream(), media_type="text/event-stream")


@pytest.fixture
async def openai_double() -> AsyncIterator[OpenAITestDouble]:
    """A running :class:`OpenAITestDouble`; its ``url`` is the server root."""
    double = OpenAITestDouble()
    async with serving(double.app) as url:
        double.url = url
        yield double


# The reply builders travel with the double, so test modules need not import this conftest.
OpenAITestDouble.text = staticmethod(text_reply)  # type: ignore[attr-defined]
OpenAITestDouble.tools = staticmethod(tool_reply)  # type: ignore[attr-defined]
OpenAITestDouble.Reply = Reply  # type: ignore[attr-defined]
