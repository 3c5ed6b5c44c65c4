"""The tool runner actor in lockstep sessions (virtual time): concurrency, limits, timeouts, cancellation by
barge-in and by Cancel versus side-effecting tools, unknown tools, validation, progress, timers, tool actors
beside the runner, and the whole live loop with the scripted policy; a recording replays bit for bit."""

from __future__ import annotations

import pytest
import trio
from doubles import DialogDouble, PerceptionDouble

from microturn.actors.clock import ClockActor
from microturn.actors.interaction import InteractionActor
from microturn.actors.output_mixer import OutputMixer
from microturn.actors.tool_runner import ToolRunner
from microturn.messages import (
    BackgroundUpdate,
    Cancel,
    Heard,
    Interrupt,
    Message,
    ToolCall,
    ToolProgress,
    ToolResult,
)
from microturn.runtime import Actor, SessionFailed, open_session, read_recording, replay
from microturn.tools import (
    ToolContext,
    ToolRegistry,
    calculate,
    default_registry,
    session_time,
    set_timer,
    tool,
)

RAN: list[str] = []


@tool(timeout=2.0, concurrency=100)
async def work(ctx: ToolContext, seconds: float, label: str = "") -> str:
    """Test double of a slow tool: sleeps ``seconds`` of session time, reporting progress half way."""
    RAN.append(label)
    await ctx.sleep(seconds / 2)
    await ctx.progress("half way", 0.5)
    await ctx.sleep(seconds / 2)
    return f"worked {seconds}"


@tool(concurrency=2)
async def narrow(ctx: ToolContext, seconds: float) -> float:
    """Test double of a tool that allows two calls at once."""
    await ctx.sleep(seconds)
    return ctx.now()


@tool(side_effects=True, timeout=1.0)
async def send_email(ctx: ToolContext, seconds: float) -> str:
    """Test double of a side-effecting tool: must finish once started."""
    await ctx.sleep(seconds)
    return "sent"


@tool
async def broken() -> None:
    """Test double of a buggy tool."""
    raise KeyError("oops")


def registry() -> ToolRegistry:
    return ToolRegistry([work, narrow, send_email, broken, session_time, set_timer, calculate])


def of(log: list[Message], cls: type) -> list:
    return [m for m in log if isinstance(m, cls)]


def results(log: list[Message]) -> dict[str, ToolResult]:
    return {r.call_id: r for r in of(log, ToolResult)}


async def run(inputs: list[tuple[float, Message]], ticks: int = 20, actors: list[Actor] | None = None) -> list[Message]:
    log: list[Message] = []
    actors = actors if actors is not None else [ToolRunner(registry())]
    async with open_session([ClockActor(), *actors], taps=[log.append]) as session:
        for at, message in inputs:
            session.schedule(message, at=at)
        await session.run_ticks(ticks)
    return log


def call(call_id: str, name: str = "work", generation: int = 0, **args) -> ToolCall:
    return ToolCall(call_id=call_id, name=name, args=args, generation=generation)


async def test_calls_run_concurrently_and_report_elapsed_session_time(autojump_clock) -> None:
    log = await run([(0.1, call(f"w{i}", seconds=0.5)) for i in range(20)])
    got = results(log)
    assert len(got) == 20 and all(r.ok and r.value == "worked 0.5" and r.elapsed == 0.5 for r in got.values())
    assert {r.stamp.time for r in got.values()} == {0.6}  # all twenty ran side by side
    assert [(p.call_id, p.text, p.fraction) for p in of(log, ToolProgress)][:1] == [("w0", "half way", 0.5)]
    assert len(of(log, ToolProgress)) == 20


async def test_a_tools_concurrency_limit_queues_the_rest(autojump_clock) -> None:
    log = await run([(0.0, call(f"n{i}", "narrow", seconds=0.4)) for i in range(5)])
    finished = sorted(r.value for r in results(log).values())
    assert finished == pytest.approx([0.4, 0.4, 0.8, 0.8, 1.2])


async def test_a_call_past_its_timeout_is_cancelled_with_an_error(autojump_clock) -> None:
    log = await run([(0.2, call("slow", seconds=5.0))])
    (result,) = of(log, ToolResult)
    assert (result.ok, result.error, result.elapsed, result.stamp.time) == (
        False, "tool 'work' timed out after 2 s", 2.0, 2.2
    )  # fmt: skip


async def test_in_realtime_calls_overlap_and_time_out_on_the_real_clock() -> None:
    """Realtime mode (trio's real clock): the timeout is a cancel-scope deadline, the same session time."""

    @tool(timeout=0.05)
    async def stuck(ctx: ToolContext) -> None:
        await ctx.sleep(30)

    log: list[Message] = []
    done = trio.Event()

    def tap(message: Message) -> None:
        log.append(message)
        if len(of(log, ToolResult)) == 3:
            done.set()

    with trio.fail_after(10):
        async with open_session([ToolRunner([stuck, work])], mode="realtime", taps=[tap]) as session:
            await session.publish(call("s", "stuck"))
            await session.publish(call("a", seconds=0.1))
            await session.publish(call("b", seconds=0.1))
            await done.wait()
    got = results(log)
    assert got["s"].error == "tool 'stuck' timed out after 0.05 s" and got["s"].elapsed >= 0.05
    assert got["a"].ok and got["b"].ok
    b_half_way = next(m.stamp.seq for m in of(log, ToolProgress) if m.call_id == "b")
    assert b_half_way < got["a"].stamp.seq  # b was under way before a finished: side by side


async def test_an_unknown_tool_gets_a_clear_error_at_once(autojump_clock) -> None:
    log = await run([(0.2, call("x-1", "format_disk", drive="c"))])
    (result,) = of(log, ToolResult)
    assert not result.ok and result.stamp.time == 0.2
    assert result.error == (
        "unknown tool 'format_disk'; registered: broken, calculate, narrow, send_email, session_time, set_timer, work"
    )


async def test_a_bad_argument_fails_the_call_and_the_tool_never_runs(autojump_clock) -> None:
    RAN.clear()
    log = await run([(0.2, call("b-1", seconds="soon", label="bad")), (0.2, call("b-2", seconds=0.2, label="good"))])
    got = results(log)
    assert got["b-1"].error == "tool 'work': argument 'seconds' = 'soon' is invalid: expected `float`, got `str`"
    assert got["b-2"].ok and RAN == ["good"]


async def test_a_tool_that_raises_fails_its_call_not_the_session(autojump_clock) -> None:
    log = await run([(0.2, call("k-1", "broken")), (0.4, call("k-2", "calculate", expression="1+1"))])
    got = results(log)
    assert got["k-1"].error == "tool 'broken' failed: KeyError: 'oops'" and got["k-2"].value == 2


async def test_a_barge_in_cancels_its_generation_but_side_effecting_tools_finish(autojump_clock) -> None:
    inputs = [
        (0.2, call("old", seconds=1.0, generation=1)),
        (0.2, call("mail", "send_email", seconds=0.6, generation=1)),
        (0.2, call("new", seconds=1.0, generation=3)),
        (0.5, Interrupt(generation=2, reason="user_interrupting")),
    ]
    log = await run(inputs)
    got = results(log)
    assert (got["old"].ok, got["old"].error, got["old"].stamp.time) == (
        False, "cancelled: interrupted (generation 2)", 0.5
    )  # fmt: skip
    assert (got["mail"].ok, got["mail"].value, got["mail"].stamp.time) == (True, "sent", 0.8)
    assert got["new"].ok and got["new"].stamp.time == 1.2  # a newer generation is not touched
    notes = [p.text for p in of(log, ToolProgress) if p.call_id == "mail"]
    assert notes == ["not cancelled (interrupted (generation 2)): side-effecting tools finish and report"]


async def test_cancel_stops_one_call_and_is_declined_by_side_effecting_tools(autojump_clock) -> None:
    inputs = [
        (0.2, call("a", seconds=1.0)),
        (0.2, call("b", seconds=1.0)),
        (0.2, call("m", "send_email", seconds=0.4)),
        (0.4, Cancel(task_id="a", reason="user asked")),
        (0.4, Cancel(task_id="m")),
        (0.4, Cancel(task_id="no-such-call")),
    ]
    got = results(await run(inputs))
    assert got["a"].error == "cancelled: Cancel (user asked)" and got["a"].elapsed == pytest.approx(0.2)
    assert got["b"].ok and got["m"].ok and got["m"].value == "sent"


async def test_a_side_effecting_tool_outliving_its_timeout_is_noted_not_killed(autojump_clock) -> None:
    log = await run([(0.2, call("m", "send_email", seconds=1.6))])
    (result,) = of(log, ToolResult)
    assert (result.ok, result.value, result.elapsed) == (True, "sent", 1.6)
    (note,) = of(log, ToolProgress)
    assert note.text == "still running after 1 s; side-effecting tools are not interrupted" and note.stamp.time == 1.2


async def test_a_timer_speaks_at_its_time_survives_a_barge_in_and_can_be_cancelled(autojump_clock) -> None:
    inputs = [
        (0.2, call("t1", "set_timer", seconds=1.5, message="Tea is ready.", generation=1)),
        (0.2, call("t2", "set_timer", seconds=1.0)),
        (0.4, Interrupt(generation=5)),
        (0.6, Cancel(task_id="timer-t2")),
    ]
    log = await run(inputs)
    got = results(log)
    assert got["t1"].value == {"timer_id": "timer-t1", "seconds": 1.5, "fires_at": 1.7}
    updates = of(log, BackgroundUpdate)
    assert [(u.task_id, u.status, u.text, u.delivery, u.stamp.time) for u in updates] == [
        ("timer-t2", "cancelled", "", "silent", 0.6),
        ("timer-t1", "final", "Tea is ready.", "interrupt", 1.7),
    ]


class Weather(Actor):
    """A whole tool actor: answers ToolCalls for its own names."""

    tool_names = ("weather",)
    subscriptions = (ToolCall,)

    async def handle(self, message: object) -> None:
        if isinstance(message, ToolCall) and message.name in self.tool_names:
            await self.publish(ToolResult(call_id=message.call_id, ok=True, value="sunny"))


async def test_names_a_tool_actor_answers_are_left_to_it(autojump_clock) -> None:
    log = await run(
        [(0.2, call("w-1", "weather")), (0.2, call("x-1", "snow"))], actors=[ToolRunner(registry()), Weather()]
    )
    assert [(r.call_id, r.ok, r.value) for r in of(log, ToolResult)][:1] == [("w-1", True, "sunny")]
    got = results(log)
    assert len(of(log, ToolResult)) == 2 and "registered: broken, calculate" in got["x-1"].error
    assert "weather" in got["x-1"].error  # the list names what a tool actor answers too


async def test_a_name_answered_twice_is_refused_at_start(autojump_clock) -> None:
    @tool
    async def weather(city: str) -> str:
        return "rain"

    with pytest.raises(SessionFailed, match="tool 'weather' is registered with 'tool_runner' and also answered by"):
        await run([], actors=[ToolRunner([weather]), Weather()])


# --- the live loop: scripted policy, interaction actor, output mixer, tool runner -------------------------------


def live(texts: dict[int, str]) -> list[Actor]:
    tools = default_registry()
    return [
        PerceptionDouble(texts),
        DialogDouble(),
        InteractionActor(tools=tools.names()),
        OutputMixer(),
        ToolRunner(tools),
    ]


async def test_the_live_loop_asks_the_time_and_speaks_the_answer(autojump_clock) -> None:
    log = await run([], ticks=60, actors=live({2: "what time is it?"}))
    (result,) = of(log, ToolResult)
    assert result.call_id == "session_time-1" and result.ok
    heard = [h.text_heard for h in of(log, Heard)]
    assert heard == ["Let me check the time.", f"It is {result.value:.1f} seconds into our conversation."]


async def test_the_live_loop_sets_a_timer_that_speaks_on_time(autojump_clock) -> None:
    log = await run([], ticks=80, actors=live({2: "remind me in 8 seconds to stretch"}))
    (result,) = of(log, ToolResult)
    fired = next(u for u in of(log, BackgroundUpdate) if u.status == "final")
    assert result.ok and fired.text == "Reminder: stretch." and fired.delivery == "interrupt"
    assert fired.stamp.time == pytest.approx(result.stamp.time + 8)
    last = of(log, Heard)[-1]
    assert last.text_heard == "Reminder: stretch." and not last.truncated
    assert last.stamp.time - fired.stamp.time < 2.0  # said at once, not at some later pause


def recorded_session() -> list[Actor]:
    return [ClockActor(), *live({2: "what time is it?", 30: "what is 12 times 7"})]


async def test_a_session_with_tools_replays_bit_for_bit(autojump_clock, tmp_path) -> None:
    path = tmp_path / "tools.mtrec"
    async with open_session(recorded_session(), record=path) as session:
        await session.run_ticks(70)
    recorded = read_recording(path).messages
    assert [r.call_id for r in of(recorded, ToolResult)] == ["session_time-1", "calculate-2"]
    result = await replay(path, factory=recorded_session)
    assert result.ok, result.divergence
    assert result.compared > 200
