"""The API key never leaves in any shape: a server that echoes it lower-cased, upper-cased or cut by a
character (in its answer, an error, a tool call's arguments) gets it masked in the recording, the logs, the
errors and the messages. The :class:`Redactor` itself is checked as a property over many seeded secrets."""

from __future__ import annotations

import json
import logging

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from microturn.actors.background import BackgroundActor
from microturn.actors.clock import ClockActor
from microturn.actors.reasoners import OpenAIChatReasoner
from microturn.actors.tool_runner import ToolRunner
from microturn.messages import BackgroundUpdate, ContextPackage, Delegate
from microturn.redaction import MASK, MIN_RUN, Redactor
from microturn.runtime import capture_logs, get_logger, open_session
from microturn.tools import ToolRegistry, tool

SECRET = "sk-live-Kq7ZpX2mR9vT4wY8nB3c"
ECHOES = {
    "lower": SECRET.lower(),
    "upper": SECRET.upper(),
    "cut_last": SECRET[:-1],
    "cut_first": SECRET[1:],
    "middle": SECRET[5:5 + MIN_RUN],
}


def leaks(blob: str | bytes) -> list[str]:
    """Every piece of the secret of MIN_RUN characters found in ``blob``, case-insensitively."""
    text = (blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob).lower()
    low = SECRET.lower()
    return [low[i : i + MIN_RUN] for i in range(len(low) - MIN_RUN + 1) if low[i : i + MIN_RUN] in text]


# --- the redactor as a property --------------------------------------------------------------------------------

SECRETS = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=MIN_RUN, max_size=64)
FILLER = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(secret=SECRETS, data=st.data(), before=FILLER, after=FILLER)
def test_any_piece_of_the_secret_in_any_case_is_masked(secret: str, data, before: str, after: str) -> None:
    start = data.draw(st.integers(0, len(secret) - MIN_RUN))
    end = data.draw(st.integers(start + MIN_RUN, len(secret)))
    piece = data.draw(st.sampled_from([str.lower, str.upper, str.swapcase, str]))(secret[start:end])
    out = Redactor([secret])(before + piece + after)
    low = secret.lower()
    assert not any(low[i : i + MIN_RUN] in out.lower() for i in range(len(low) - MIN_RUN + 1))
    assert MASK in out


@settings(max_examples=200, deadline=None, derandomize=True)
@given(secret=SECRETS, text=FILLER)
def test_text_without_a_piece_of_the_secret_is_untouched(secret: str, text: str) -> None:
    low = secret.lower()
    if any(low[i : i + MIN_RUN] in text.lower() for i in range(len(low) - MIN_RUN + 1)):
        return
    assert Redactor([secret])(text) == text


def test_a_short_secret_is_masked_whole_in_any_case() -> None:
    assert Redactor(["abc123"])("x ABC123 y abc12") == f"x {MASK} y abc12"


# --- an endpoint that echoes the key ---------------------------------------------------------------------------


def _chunk(delta: dict, finish: str | None = None) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


class EchoingEndpoint:
    """Test double of an OpenAI-compatible endpoint that puts a transformed copy of the key it was sent
    into what it answers: the text of the answer, an HTTP error, or a tool call's arguments."""

    def __init__(self, where: str, echo: str) -> None:
        self.where = where
        self.echo = echo
        self.calls = 0
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])

    async def _complete(self, request: Request) -> Response:
        self.calls += 1
        body = await request.json()
        if self.where == "error":
            return JSONResponse({"error": {"message": f"invalid api key {self.echo}"}}, status_code=401)
        if self.where == "tool" and self.calls == 1:
            args = json.dumps({"query": f"key {self.echo}"})
            head = {"index": 0, "id": "call_0", "type": "function", "function": {"name": "lookup", "arguments": args}}
            lines = [_chunk({"tool_calls": [head]}), _chunk({}, finish="tool_calls")]
        else:
            said = f"Your key is {self.echo}." if self.where == "answer" else "Done: " + body["messages"][-1]["content"]
            lines = [_chunk({"content": said}), _chunk({}, finish="stop")]

        async def stream():
            for line in [*lines, "[DONE]"]:
                yield f"data: {line}\n\n".encode()

        return StreamingResponse(stream(), media_type="text/event-stream")


@tool
async def lookup(query: str) -> str:
    """A test double of a search tool: returns its query."""
    return f"found: {query}"


def task() -> Delegate:
    return Delegate(task_id="t1", goal="what is my key?", context=ContextPackage(tools=["lookup"]), generation=1)


@pytest.mark.parametrize("where", ["answer", "error", "tool"])
@pytest.mark.parametrize("echo", sorted(ECHOES))
async def test_an_echoed_key_reaches_no_recording_log_or_message(serve, tmp_path, caplog, where, echo) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint = EchoingEndpoint(where, ECHOES[echo])
    registry = ToolRegistry([lookup])
    updates: list[BackgroundUpdate] = []
    done = trio.Event()

    def tap(message) -> None:
        if isinstance(message, BackgroundUpdate):
            updates.append(message)
            if message.status in ("final", "failed"):
                done.set()

    path = tmp_path / "session.mtrec"
    async with serve(endpoint.app) as url:
        reasoner = OpenAIChatReasoner(url, "m", SECRET, timeout=5.0)
        actors = [ClockActor(), BackgroundActor(reasoner, tools=registry), ToolRunner(registry)]
        with capture_logs("debug") as logs, trio.fail_after(15):
            async with open_session(actors, mode="realtime", record=path, taps=[tap]) as session:
                await session.publish(task())
                await done.wait()
    assert updates[-1].status == ("failed" if where == "error" else "final")
    assert MASK in updates[-1].text  # the echo was there, and masked
    assert leaks(path.read_bytes()) == []
    assert leaks(repr(logs)) == [] and leaks(caplog.text) == []
    assert leaks(repr(updates)) == []


async def test_a_key_logged_by_mistake_is_masked_in_the_log_event() -> None:
    OpenAIChatReasoner("http://127.0.0.1:9", api_key=SECRET)  # registers its key with the log processors
    with capture_logs("debug") as logs:
        get_logger("test").warning("oops", detail=f"header was Bearer {SECRET.lower()[:-1]}", error=ValueError(SECRET))
    assert logs and leaks(repr(logs)) == []
