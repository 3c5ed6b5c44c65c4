"""The OpenAI-compatible streaming client against a loopback test double of the endpoint (trio's real clock):
streamed answers, streamed tool calls, malformed chunks and arguments, broken streams, a server that never
answers, HTTP errors; configuration from the environment; and the API key absent from recordings and logs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio

from microturn.actors.background import BackgroundActor
from microturn.actors.clock import ClockActor
from microturn.actors.reasoners import OfflinePlanner, OpenAIChatReasoner, ReasonerError, default_reasoner
from microturn.actors.tool_runner import ToolRunner
from microturn.messages import BackgroundUpdate, ContextPackage, Delegate, ToolResult, TranscriptLine
from microturn.runtime import capture_logs, open_session
from microturn.tools import ToolContext, ToolError, ToolRegistry, calculate, session_time, tool

SECRET = "sk-test-DO-NOT-LEAK-0123456789"


@tool
async def weather(city: str) -> str:
    """The weather in a city (a test double: always sunny)."""
    return f"sunny in {city}"


class TaskIODouble:
    """Test double of the background actor's TaskIO: runs tools directly on trio's clock, records all."""

    def __init__(self, tools: ToolRegistry) -> None:
        self.task_id = "task-1"
        self.tools = tools
        self.notes: list[str] = []
        self.calls: list[tuple[str, Any]] = []

    def now(self) -> float:
        return trio.current_time()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def progress(self, text: str) -> None:
        self.notes.append(text)

    async def call_tool(self, name: str, args: Any) -> ToolResult:
        self.calls.append((name, args))
        call_id = f"{self.task_id}/{name}-{len(self.calls)}"
        if name not in self.tools:
            return ToolResult(call_id=call_id, ok=False, error=f"unknown tool {name!r}")
        try:
            value = await self.tools.get(name).invoke(args, ToolContext.standalone(call_id, name))
        except ToolError as exc:
            return ToolResult(call_id=call_id, ok=False, error=str(exc))
        return ToolResult(call_id=call_id, ok=True, value=value)


def task(goal: str = "what is six times seven?") -> Delegate:
    context = ContextPackage(
        transcript=[TranscriptLine(speaker="user", text=goal, tick=3)],
        heard=["Let me look"],
        dialog_state="floor=user user=inviting assistant=silent",
        tools=["calculate", "weather"],
    )
    return Delegate(task_id="task-1", goal=goal, context=context, generation=1)


async def solve(double, goal: str = "what is six times seven?", **kwargs) -> tuple[str, TaskIODouble]:
    io = TaskIODouble(ToolRegistry([calculate, weather]))
    reasoner = OpenAIChatReasoner(double.url, "test-model", SECRET, **kwargs)
    with trio.fail_after(10):
        return await reasoner.solve(task(goal), io), io


async def test_a_streamed_answer_and_what_the_request_carries(openai_double) -> None:
    openai_double.script(openai_double.text("The answer is forty two."))
    answer, io = await solve(openai_double)
    assert answer == "The answer is forty two." and io.notes == ["thinking…"]
    (request,) = openai_double.requests
    body, headers = request["json"], request["headers"]
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert body["model"] == "test-model" and body["stream"] is True and body["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in body["tools"]] == ["calculate", "weather"]
    assert body["tools"][1]["function"]["parameters"]["required"] == ["city"]
    system, user = body["messages"]
    assert user == {"role": "user", "content": "what is six times seven?"}
    assert "[tick 3] user: what is six times seven?" in system["content"]
    assert "- Let me look" in system["content"] and "user=inviting" in system["content"]


async def test_streamed_tool_calls_run_through_the_registry_and_loop_to_an_answer(openai_double) -> None:
    openai_double.script(
        openai_double.tools(("calculate", '{"expression": "6 * 7"}'), ("weather", '{"city": "Oslo"}'), fragment=4),
        openai_double.text("Six times seven is 42, and it is sunny in Oslo."),
    )
    answer, io = await solve(openai_double)
    assert answer == "Six times seven is 42, and it is sunny in Oslo."
    assert io.calls == [("calculate", {"expression": "6 * 7"}), ("weather", {"city": "Oslo"})]
    assert io.notes == ["thinking…", "calling calculate…", "calling weather…", "reading the tool results…"]
    second = openai_double.requests[1]["json"]["messages"]
    assistant, first_result, second_result = second[2:]
    assert [c["function"] for c in assistant["tool_calls"]] == [
        {"name": "calculate", "arguments": '{"expression": "6 * 7"}'},
        {"name": "weather", "arguments": '{"city": "Oslo"}'},
    ]
    assert first_result == {"role": "tool", "tool_call_id": "call_0_x", "content": '{"ok":true,"value":42}'}
    assert json.loads(second_result["content"]) == {"ok": True, "value": "sunny in Oslo"}


async def test_bad_tool_arguments_and_unknown_tools_are_reported_back_to_the_model(openai_double) -> None:
    openai_double.script(
        openai_double.tools(("calculate", '{"expression": 6'), ("weather", '{"town": "Oslo"}'), ("launch", "{}")),
        openai_double.text("Sorry, I could not do that."),
    )
    answer, io = await solve(openai_double)
    assert answer == "Sorry, I could not do that."
    contents = [json.loads(m["content"]) for m in openai_double.requests[1]["json"]["messages"][3:]]
    assert [c["ok"] for c in contents] == [False, False, False]
    assert "arguments of 'calculate' are not valid JSON" in contents[0]["error"]
    assert contents[1]["error"] == "tool 'weather': unexpected argument 'town' = 'Oslo' (parameters: city)"
    assert contents[2]["error"] == "unknown tool 'launch'"
    assert [name for name, _ in io.calls] == ["weather", "launch"]  # unparsable arguments never reach a tool


async def test_a_malformed_chunk_fails_with_a_clear_error(openai_double) -> None:
    lines = openai_double.text("Half an answer")
    lines.insert(2, '{"choices": [{"delta": {"content": "oops"')
    openai_double.script(lines)
    with pytest.raises(ReasonerError, match=r"malformed chunk in the reasoner's stream .*oops"):
        await solve(openai_double)


async def test_a_chunk_of_the_wrong_shape_is_malformed_too(openai_double) -> None:
    openai_double.script(['{"choices": [{"delta": {"content": 7}}]}', "[DONE]"])
    with pytest.raises(ReasonerError, match=r"malformed chunk .*Expected `str \| null`, got `int`"):
        await solve(openai_double)


async def test_a_stream_that_ends_early_fails(openai_double) -> None:
    openai_double.script(openai_double.text("Paris is the capital of France.")[:-2])  # no finish_reason, no [DONE]
    with pytest.raises(ReasonerError, match=r"broke off before it finished \(no finish_reason, no \[DONE\]\)"):
        await solve(openai_double)


async def test_a_connection_dropped_mid_stream_fails(openai_double) -> None:
    openai_double.script(openai_double.Reply(openai_double.text("Paris is the capital of France."), abort_after=2))
    with pytest.raises(ReasonerError, match="stream broke off: .*Error"):  # the connection itself dropped
        await solve(openai_double)


async def test_a_server_that_never_answers_fails_after_the_timeout(openai_double) -> None:
    openai_double.script(openai_double.Reply(never=True))
    with pytest.raises(ReasonerError, match=r"did not answer within 0\.5 s"):
        await solve(openai_double, timeout=0.5)


async def test_an_http_error_is_reported_without_the_key(openai_double) -> None:
    body = {"error": {"message": f"invalid api key {SECRET}", "type": "auth"}}
    openai_double.script(openai_double.Reply(status=401, body=body))
    with pytest.raises(ReasonerError) as caught:
        await solve(openai_double)
    assert str(caught.value) == "the reasoner endpoint answered HTTP 401: invalid api key ***"


async def test_an_error_in_the_stream_fails(openai_double) -> None:
    openai_double.script(['{"error": {"message": "model overloaded"}}'])
    with pytest.raises(ReasonerError, match="failed mid-stream: model overloaded"):
        await solve(openai_double)


async def test_tool_rounds_are_bounded(openai_double) -> None:
    openai_double.script(*[openai_double.tools(("calculate", '{"expression": "1+1"}'))] * 2)
    with pytest.raises(ReasonerError, match="no final answer after 2 rounds of tool calls"):
        await solve(openai_double, max_rounds=2)


async def test_an_empty_answer_fails(openai_double) -> None:
    openai_double.script(openai_double.text(""))
    with pytest.raises(ReasonerError, match="empty answer"):
        await solve(openai_double)


async def test_an_endpoint_that_is_not_there_fails() -> None:
    with trio.socket.socket() as sock:  # a free port, closed again: nothing listens there
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reasoner = OpenAIChatReasoner(f"http://127.0.0.1:{port}/v1", api_key=SECRET)
    with pytest.raises(ReasonerError, match=rf"cannot reach the reasoner endpoint http://127.0.0.1:{port}/v1/chat"):
        with trio.fail_after(10):
            await reasoner.solve(task(), TaskIODouble(ToolRegistry()))


def test_configuration_from_the_environment_and_a_repr_without_the_key() -> None:
    assert OpenAIChatReasoner.from_env({}) is None
    assert isinstance(default_reasoner({}), OfflinePlanner)
    env = {"OPENAI_BASE_URL": "http://a:1/v1", "OPENAI_API_KEY": SECRET, "MICROTURN_REASONER_URL": "http://b:2"}
    reasoner = OpenAIChatReasoner.from_env(env)
    assert reasoner is not None and reasoner.url == "http://b:2/v1/chat/completions" and reasoner.model == "default"
    assert reasoner.has_key and SECRET not in repr(reasoner) and SECRET not in repr(vars(reasoner))
    assert isinstance(default_reasoner(env), OpenAIChatReasoner)
    env = {"OPENAI_BASE_URL": "http://a:1/v1/", "MICROTURN_REASONER_MODEL": "qwen", "OPENAI_MODEL": "gpt"}
    reasoner = OpenAIChatReasoner.from_env(env)
    assert reasoner.url == "http://a:1/v1/chat/completions" and reasoner.model == "qwen" and not reasoner.has_key
    with pytest.raises(ValueError, match="must be an http"):
        OpenAIChatReasoner("localhost:30000")


async def test_the_key_is_absent_from_recordings_and_logs(openai_double, tmp_path, caplog) -> None:
    """A realtime session: background reasoner on the loopback double, with a tool round, recorded and logged
    at debug level (structlog and the stdlib loggers httpx uses)."""
    caplog.set_level(logging.DEBUG)
    openai_double.script(
        openai_double.tools(("calculate", '{"expression": "6 * 7"}')),
        openai_double.text("Six times seven is 42."),
    )
    registry = ToolRegistry([calculate, session_time])
    reasoner = OpenAIChatReasoner(openai_double.url, "test-model", SECRET, timeout=5.0)
    path = tmp_path / "session.mtrec"
    updates: list[BackgroundUpdate] = []
    done = trio.Event()

    def tap(message) -> None:
        if isinstance(message, BackgroundUpdate):
            updates.append(message)
            if message.status in ("final", "failed"):
                done.set()

    actors = [ClockActor(), BackgroundActor(reasoner, tools=registry), ToolRunner(registry)]
    with capture_logs("debug") as logs, trio.fail_after(10):
        async with open_session(actors, mode="realtime", record=path, taps=[tap]) as session:
            await session.publish(task())
            await done.wait()
    assert [u.status for u in updates] == ["started", "progress", "progress", "progress", "final"]
    assert updates[-1].text == "Six times seven is 42."
    assert openai_double.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"  # it was used...
    assert SECRET.encode() not in path.read_bytes()  # ...and never recorded
    assert logs and SECRET not in repr(logs)
    assert caplog.records and SECRET not in caplog.text
    assert all(SECRET not in repr(r.args) for r in caplog.records)
