"""The sglang client backend's rules, against a test double: a small starlette app on loopback that this test
controls (holds a reply, answers 400, reports an aborted turn, counts requests in flight)."""

from __future__ import annotations

import contextlib

import httpx
import msgspec
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from microturn.messages import DialogState, Heard, InputChunk, ToolResult
from microturn.model.layout import TICK
from microturn.model.protocol import ModelError, ModelSpec, StepInput
from microturn.model.sglang import SglangError, TextBridge, merge_inputs, merge_outputs, open_sglang_backend


class DoubleServer:
    """A stand-in sglang server. ``script[i]`` says how the i-th /generate ends: "ok", "hold" (until
    ``release[i]`` is set), "abort" (finish_reason abort: the turn was rolled back), or (status, message)."""

    def __init__(self, script=(), model_info=None):
        self.script = list(script)
        self.model_info = model_info or {}
        self.generates: list[dict] = []
        self.release: dict[int, trio.Event] = {}
        self.received: dict[int, trio.Event] = {}
        self.inflight = 0
        self.max_inflight = 0
        self.closed: list[str] = []
        self.aborted: list[dict] = []
        self.app = Starlette(routes=[
            Route("/open_session", self.open_session, methods=["POST"]),
            Route("/close_session", self.close_session, methods=["POST"]),
            Route("/abort_request", self.abort_request, methods=["POST"]),
            Route("/get_model_info", self.get_model_info, methods=["GET"]),
            Route("/generate", self.generate, methods=["POST"]),
        ])

    def event(self, table, i):
        return table.setdefault(i, trio.Event())

    async def open_session(self, request: Request):
        body = await request.json()
        assert body["streaming"] is True
        return JSONResponse("sid-1")

    async def close_session(self, request: Request):
        self.closed.append((await request.json())["session_id"])
        return Response(status_code=200)

    async def abort_request(self, request: Request):
        self.aborted.append(await request.json())
        return Response(status_code=200)

    async def get_model_info(self, request: Request):
        return JSONResponse(self.model_info)

    async def generate(self, request: Request):
        body = await request.json()
        i = len(self.generates)
        self.generates.append(body)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        self.event(self.received, i).set()
        try:
            action = self.script[i] if i < len(self.script) else "ok"
            if action == "hold":
                await self.event(self.release, i).wait()
            if isinstance(action, tuple):
                status, message = action
                return JSONResponse({"error": {"message": message}}, status_code=status)
            words = f"w{i} ".encode()
            finish = {"type": "abort", "message": "Abort before prefill"} if action == "abort" else \
                {"type": "length", "length": len(words)}
            ids = [] if action == "abort" else list(words)
            text = "" if action == "abort" else (body.get("text") and f"<speak>w{i} " or words.decode())
            return JSONResponse({"text": text, "output_ids": ids, "meta_info": {
                "id": f"r{i}", "finish_reason": finish, "prompt_tokens": 10 * (i + 1), "completion_tokens": len(ids),
                "cached_tokens": 10 * i}})
        finally:
            self.inflight -= 1


@contextlib.asynccontextmanager
async def serving(app):
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: hypercorn_serve(app, config, shutdown_trigger=stop.wait,
                                                                         task_status=task_status))
        try:
            yield binds[0]
        finally:
            stop.set()


def tick(t, text="", **extra):
    return StepInput(chunk=InputChunk(tick=t, text=text), **extra)


def user_bytes(body):
    return bytes(t for t in body["input_ids"] if t < 256)


async def test_a_late_reply_yields_silence_merges_the_next_inputs_and_never_two_in_flight():
    double = DoubleServer(["hold"])
    async with serving(double.app) as url, open_sglang_backend(url, realtime=True, deadline=0.05) as backend:
        session = await backend.open_session(ModelSpec(outputs_per_tick=4))
        first = await session.step(tick(0, "alpha"))  # request 0 is held past the deadline
        assert first.text == "" and first.controls == []
        second = await session.step(tick(1, "bravo"))  # request 0 still in flight: no second request
        assert second.text == ""
        assert len(double.generates) == 1 and double.max_inflight == 1
        assert session.late == 2
        double.event(double.release, 0).set()
        session.deadline = 60.0  # from here the replies come at once; a long budget keeps the test speed-free
        third = await session.step(tick(2, "charlie"))
    assert len(double.generates) == 2 and double.max_inflight == 1
    merged = double.generates[1]
    assert merged["input_ids"].count(TICK) == 1  # one tick's header: the inputs were merged, not stacked
    assert b"bravo charlie" in user_bytes(merged)
    assert merged["session_params"] == {"id": "sid-1", "rid": "r0"}
    assert merged["sampling_params"] == {"max_new_tokens": 4, "temperature": 0.0,
                                         "no_stop_trim": True, "skip_special_tokens": False}
    assert third.text == "w0 w1"  # the late reply is delivered with the next one
    assert double.closed == ["sid-1"]


async def test_a_400_becomes_a_model_error_with_the_servers_message():
    double = DoubleServer([(400, "Streaming sessions do not support offset.")])
    async with serving(double.app) as url, open_sglang_backend(url, realtime=False) as backend:
        session = await backend.open_session(ModelSpec())
        with pytest.raises(ModelError, match=r"/generate: .*HTTP 400.*do not support offset") as info:
            await session.step(tick(0, "hello"))
        assert isinstance(info.value, SglangError)


async def test_a_failed_turn_is_resent_with_the_next_input_and_nothing_is_lost_or_doubled():
    double = DoubleServer(["ok", "abort", "ok", "ok", "ok"])
    text = "the quick brown fox jumps over the lazy dog and keeps running far away"  # overflows the FIFO
    async with serving(double.app) as url, open_sglang_backend(url, realtime=False) as backend:
        session = await backend.open_session(ModelSpec(outputs_per_tick=4))
        outs = [await session.step(tick(0, text))]
        outs.append(await session.step(tick(1, "alpha")))  # the server rolls this turn back
        assert outs[-1].text == ""
        outs += [await session.step(tick(t)) for t in (2, 3, 4)]
    assert session.failed == 1
    assert double.generates[2]["session_params"]["rid"] == "r0"  # resent after the last good turn
    sent = b"".join(user_bytes(b) for i, b in enumerate(double.generates) if i != 1)
    assert sent == text.encode() + b"alpha"  # in order, once each (the USER_TEXT tag between is not a byte)
    assert [o.text for o in outs] == ["w0", "", "w2", "w3", "w4"]


async def test_connection_errors_are_retried_with_backoff():
    double = DoubleServer()

    class Flaky(httpx.AsyncBaseTransport):
        def __init__(self, failures):
            self.failures = failures
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request):
            if request.url.path == "/generate" and self.failures:
                self.failures -= 1
                raise httpx.ConnectError("connection refused")
            return await self.inner.handle_async_request(request)

        async def aclose(self):
            await self.inner.aclose()

    async with serving(double.app) as url:
        async with open_sglang_backend(url, realtime=True, deadline=60.0, transport=Flaky(3)) as backend:
            session = await backend.open_session(ModelSpec())
            out = await session.step(tick(0, "hi"))
        assert out.text == "w0" and len(double.generates) == 1
        assert session.retries == 3 and session.backoffs == [0.01, 0.02, 0.04]

        # Out of budget: the tick gives up (silence), and its input goes with the next request.
        async with open_sglang_backend(url, realtime=True, deadline=0.05, transport=Flaky(10 ** 6)) as backend:
            session = await backend.open_session(ModelSpec())
            assert (await session.step(tick(0, "lost?"))).text == ""
            backend.client._transport.failures = 0
            session.deadline = 60.0
            out = await session.step(tick(1, "no"))
        assert b"lost? no" in user_bytes(double.generates[-1])
        assert session.failed == 1 and out.text == "w1"

        async with open_sglang_backend(url, realtime=False, retries=2, max_failures=0,
                                       transport=Flaky(10 ** 6)) as backend:
            session = await backend.open_session(ModelSpec())
            with pytest.raises(SglangError, match="cannot reach"):
                await session.step(tick(0, "x"))


async def test_closing_aborts_the_turn_in_flight_and_closes_the_session():
    double = DoubleServer(["hold"])
    async with serving(double.app) as url, open_sglang_backend(url, realtime=True, deadline=0.05) as backend:
        session = await backend.open_session(ModelSpec())
        await session.step(tick(0, "hello"))
        await session.close()
        assert double.aborted == [{"rid": double.generates[0]["rid"]}]
        assert double.closed == ["sid-1"]
        double.event(double.release, 0).set()
        with pytest.raises(ModelError, match="closed"):
            await session.step(tick(1))


async def test_the_text_bridge_sends_text_and_parses_the_reply():
    double = DoubleServer()
    async with serving(double.app) as url, \
            open_sglang_backend(url, mode="text", realtime=False, preamble="RULES\n") as backend:
        session = await backend.open_session(ModelSpec(outputs_per_tick=6))
        dialog = DialogState(floor="user", user="yielding", assistant="silent")
        out = await session.step(tick(3, "what time is it", dialog=dialog))
        await session.step(tick(4))
    first, second = double.generates
    assert "input_ids" not in first and first["text"].startswith("RULES\n\n[tick 3: floor=user user=yielding")
    assert "user: what time is it\n" in first["text"] and first["text"].endswith("assistant:")
    assert not second["text"].startswith("RULES")
    assert first["sampling_params"]["max_new_tokens"] == 6
    assert out.controls == ["speak"] and out.text == "w0"


def test_text_bridge_rendering_and_parsing_across_ticks():
    bridge = TextBridge(preamble="")
    si = StepInput(chunk=InputChunk(tick=7, text="hi", n_frames=0),
                   heard=[Heard(utterance_id=1, text_heard="so the", truncated=True)],
                   tool_results=[ToolResult(call_id="c", ok=True, value={"t": 3})], speaking=True)
    text = bridge.render(si)
    assert "speaking=yes" in text and "heard (cut off): so the\n" in text and 'tool ok: {"t":3}\n' in text
    assert bridge.parse("Sure, it is th").text == "Sure, it is"
    out = bridge.parse("ree <end><tool>{\"name\": \"clock\", ")
    assert out.text == "three" and out.controls == ["end_utterance"] and out.tool_call is None
    out = bridge.parse('"args": {}}</tool> <dele')
    assert out.tool_call is not None and out.tool_call.name == "clock" and out.controls == ["tool_call"]
    out = bridge.parse("gate>look it up</delegate><silence>")
    assert out.delegate == "look it up" and out.controls == ["delegate", "silence"]
    assert bridge.parse("a <b> c ").text == "a <b> c"


def test_merging_inputs_and_outputs():
    a = StepInput(chunk=InputChunk(tick=1, text="one", dmel=bytes(80), n_frames=1),
                  dialog=DialogState(floor="user", user="speaking", assistant="silent"))
    b = StepInput(chunk=InputChunk(tick=2, text="two", dmel=bytes(160), n_frames=2), speaking=True)
    m = merge_inputs(a, b)
    assert (m.chunk.tick, m.chunk.text, m.chunk.n_frames, len(m.chunk.dmel)) == (2, "one two", 3, 240)
    assert m.dialog == a.dialog and m.speaking is True
    assert merge_inputs(None, a) is a
    from microturn.model.protocol import StepOutput

    out = merge_outputs([StepOutput(text="a", controls=["speak"]), StepOutput(text="b", controls=["speak", "end_utterance"])])
    assert out.text == "a b" and out.controls == ["speak", "end_utterance"]
    assert merge_outputs([]) == StepOutput()


def test_bad_backend_options_are_named():
    from microturn.model.sglang import SglangBackend

    with pytest.raises(ValueError, match="mode"):
        SglangBackend("http://x", mode="voice")
    with pytest.raises(ValueError, match="url"):
        SglangBackend("localhost:30000")
    assert msgspec  # keep the import used
