"""The background reasoner actor and its offline planner, in lockstep sessions (virtual time): the update
stream (started -> progress -> final | failed | cancelled), delivery policies, concurrent tasks, cancellation,
timeouts, tools offered by the context package, and delegation from the live loop, replayed bit for bit."""

from __future__ import annotations

from typing import Any

import pytest
from doubles import DialogDouble, PerceptionDouble

from microturn.actors.background import BackgroundActor, DeliveryPolicy
from microturn.actors.clock import ClockActor
from microturn.actors.interaction import InteractionActor
from microturn.actors.output_mixer import OutputMixer
from microturn.actors.reasoners import (
    OfflinePlanner,
    PlanStep,
    ReasonerError,
    default_reasoner,
)
from microturn.actors.tool_runner import ToolRunner
from microturn.messages import (
    BackgroundUpdate,
    Cancel,
    ContextPackage,
    Delegate,
    Heard,
    Interrupt,
    Message,
    ToolProgress,
)
from microturn.runtime import Actor, open_session, read_recording, replay
from microturn.tools import ToolContext, ToolRegistry, default_registry, tool

SENT: list[str] = []


@tool(side_effects=True)
async def send_email(ctx: ToolContext, to: str) -> str:
    """Test double of a side-effecting tool: takes 1 s of session time, then records that it sent."""
    await ctx.sleep(1.0)
    SENT.append(to)
    return "sent"


class ReasonerDouble:
    """Test double of a reasoner backend: follows a script of steps per goal, then answers."""

    name = "double"

    def __init__(self, scripts: dict[str, list[tuple[str, Any]]]) -> None:
        self.scripts = scripts

    async def solve(self, task: Delegate, io: Any) -> str:
        answer = f"done: {task.goal}"
        for kind, arg in self.scripts.get(task.goal, []):
            if kind == "sleep":
                await io.sleep(arg)
            elif kind == "progress":
                await io.progress(arg)
            elif kind == "tool":
                result = await io.call_tool(*arg)
                answer = f"{answer} ({result.value if result.ok else result.error})"
            elif kind == "fail":
                raise ReasonerError(arg)
            elif kind == "crash":
                raise RuntimeError(arg)
        return answer


def of(log: list[Message], cls: type) -> list:
    return [m for m in log if isinstance(m, cls)]


def stream(log: list[Message], task_id: str | None = None) -> list[tuple]:
    return [
        (u.task_id, u.status, u.text, u.delivery, round(u.stamp.time, 6))
        for u in of(log, BackgroundUpdate)
        if task_id is None or u.task_id == task_id
    ]


def delegate(task_id: str, goal: str, generation: int = 0, tools: list[str] = ()) -> Delegate:
    return Delegate(task_id=task_id, goal=goal, generation=generation, context=ContextPackage(tools=list(tools)))


async def run(inputs: list[tuple[float, Message]], actor: BackgroundActor, ticks: int = 30) -> list[Message]:
    log: list[Message] = []
    async with open_session([ClockActor(), actor], taps=[log.append]) as session:
        for at, message in inputs:
            session.schedule(message, at=at)
        await session.run_ticks(ticks)
    return log


# --- the offline planner, on its own -------------------------------------------------------------------------

ALL = default_registry().names()


@pytest.mark.parametrize(
    ("goal", "tool", "args"),
    [
        ("what is 12 times 7?", "calculate", {"expression": "12 * 7"}),
        ("what's 20 percent of 50", "calculate", {"expression": "20/100*50"}),
        ("how much is (3 + 4) * 2 squared", "calculate", {"expression": "(3 + 4) * 2^2"}),
        ("how long have we been talking?", "session_time", {}),
        ("can you set a timer for 2 minutes?", "set_timer", {"seconds": 120.0}),
        ("remind me in five minutes to call mum", "set_timer", {"seconds": 300.0, "message": "Reminder: call mum."}),
        ("what is the capital of France?", "search_knowledge", {"query": "what is the capital of France"}),
    ],
)
def test_the_planner_maps_a_request_to_a_tool_call(goal: str, tool: str, args: dict) -> None:
    (step,) = OfflinePlanner().plan(goal, ALL)
    assert isinstance(step, PlanStep) and (step.tool, step.args) == (tool, args)


def test_the_planner_decomposes_and_uses_only_available_tools() -> None:
    planner = OfflinePlanner()
    steps = planner.plan("what is the capital of japan and what is 2 plus 2?", ALL)
    assert [(s.tool, s.clause) for s in steps] == [
        ("search_knowledge", "what is the capital of japan"),
        ("calculate", "what is 2 plus 2"),
    ]
    assert [s.tool for s in planner.plan("what is 2 plus 2", ["search_knowledge"])] == ["search_knowledge"]
    assert planner.plan("what is 2 plus 2", []) == ["what is 2 plus 2"]


# --- the update stream and its delivery ----------------------------------------------------------------------


async def test_a_task_streams_started_progress_final_with_the_delivery_policy(autojump_clock) -> None:
    log = await run([(0.4, delegate("task-1", "what is the capital of France?"))], BackgroundActor(OfflinePlanner()))
    assert stream(log) == [
        ("task-1", "started", "what is the capital of France?", "silent", 0.4),
        ("task-1", "progress", "checking the knowledge base…", "silent", 0.4),
        ("task-1", "final", "The capital of France is Paris.", "when_idle", 0.6),
    ]
    (note,) = of(log, ToolProgress)
    assert note.call_id == "task-1/search_knowledge-1" and note.stamp.time == pytest.approx(0.6)


async def test_urgent_goals_interrupt_and_everything_else_waits_for_a_pause(autojump_clock) -> None:
    inputs = [
        (0.2, delegate("calm", "what is 6 times 7")),
        (0.2, delegate("hurry", "what is 6 times 7, right away!")),
        (0.2, delegate("urgent", "urgent: how long have we been talking")),
    ]
    log = await run(inputs, BackgroundActor(OfflinePlanner()))
    finals = {u.task_id: (u.text, u.delivery) for u in of(log, BackgroundUpdate) if u.status == "final"}
    assert finals == {
        "calm": ("6 times 7 is 42.", "when_idle"),
        "hurry": ("6 times 7 is 42.", "interrupt"),
        "urgent": ("We have been talking for 0.4 seconds.", "interrupt"),
    }
    assert DeliveryPolicy().is_urgent("do it ASAP") and not DeliveryPolicy().is_urgent("the urgency of it")


async def test_what_the_planner_cannot_answer_fails_or_is_said_to_be_missing(autojump_clock) -> None:
    inputs = [
        (0.2, delegate("none", "what is the meaning of life?")),
        (0.2, delegate("half", "what is the capital of spain and what is the meaning of life?")),
    ]
    log = await run(inputs, BackgroundActor(OfflinePlanner(step_time=0)))
    assert stream(log, "none")[-1] == (
        "none", "failed", "I could not find that: what is the meaning of life?", "when_idle", 0.2
    )  # fmt: skip
    assert stream(log, "half")[-1][1:3] == (
        "final", "The capital of Spain is Madrid. I could not find anything about 'what is the meaning of life'."
    )  # fmt: skip


async def test_tasks_run_concurrently_up_to_the_limit(autojump_clock) -> None:
    scripts = {
        "long": [("progress", "reading"), ("sleep", 3.0)],
        "short": [("sleep", 1.0)],
        "queued": [("sleep", 1.0)],
    }
    actor = BackgroundActor(ReasonerDouble(scripts), max_tasks=2)
    inputs = [(0.2, delegate("a", "long")), (0.2, delegate("b", "short")), (0.2, delegate("c", "queued"))]
    log = await run(inputs, actor)
    assert [(t, s, at) for t, s, _, _, at in stream(log)] == [
        ("a", "started", 0.2),
        ("a", "progress", 0.2),
        ("b", "started", 0.2),
        ("b", "final", 1.2),
        ("c", "started", 1.2),  # waited for a free slot
        ("c", "final", 2.2),
        ("a", "final", 3.2),
    ]


async def test_cancel_and_barge_in_cancel_tasks_of_their_generation(autojump_clock) -> None:
    scripts = {goal: [("sleep", 2.0)] for goal in ("one", "two", "three", "four")}
    inputs = [
        (0.2, delegate("t1", "one", generation=1)),
        (0.2, delegate("t2", "two", generation=2)),
        (0.2, delegate("t3", "three", generation=5)),
        (0.2, delegate("t4", "four", generation=5)),
        (0.6, Interrupt(generation=2, reason="user_interrupting")),
        (0.8, Cancel(task_id="t4", reason="user said never mind")),
    ]
    log = await run(inputs, BackgroundActor(ReasonerDouble(scripts)))
    ends = {u.task_id: (u.status, u.text, u.delivery, u.stamp.time) for u in of(log, BackgroundUpdate)
            if u.status not in ("started", "progress")}  # fmt: skip
    assert ends == {
        "t1": ("cancelled", "interrupted (generation 2)", "silent", 0.6),
        "t2": ("cancelled", "interrupted (generation 2)", "silent", 0.6),
        "t3": ("final", "done: three", "when_idle", 2.2),
        "t4": ("cancelled", "Cancel (user said never mind)", "silent", 0.8),
    }


async def test_tasks_can_outlive_barge_ins_when_asked(autojump_clock) -> None:
    actor = BackgroundActor(ReasonerDouble({"one": [("sleep", 1.0)]}), cancel_on_interrupt=False)
    log = await run([(0.2, delegate("t1", "one", generation=1)), (0.4, Interrupt(generation=3))], actor)
    assert stream(log)[-1][1] == "final"


async def test_timeouts_errors_and_crashes_fail_the_task_not_the_session(autojump_clock) -> None:
    scripts = {
        "slow": [("sleep", 5.0)],
        "refuses": [("fail", "the endpoint said no")],
        "buggy": [("crash", "boom")],
    }
    actor = BackgroundActor(ReasonerDouble(scripts), task_timeout=1.0)
    inputs = [(0.2, delegate(g, g)) for g in scripts] + [(0.2, delegate("slow", "a second task, same id"))]
    log = await run(inputs, actor)
    failed = [(u.task_id, u.text) for u in of(log, BackgroundUpdate) if u.status == "failed"]
    assert sorted(failed) == [
        ("buggy", "double failed: RuntimeError: boom"),
        ("refuses", "the endpoint said no"),
        ("slow", "task id 'slow' is already running"),
        ("slow", "the task took longer than 1 s"),
    ]


async def test_only_the_tools_in_the_context_package_are_offered(autojump_clock) -> None:
    scripts = {"use tools": [("tool", ("calculate", {"expression": "2+3"})), ("tool", ("session_time", {}))]}
    actor = BackgroundActor(ReasonerDouble(scripts))
    log = await run([(0.2, delegate("t", "use tools", tools=["calculate"]))], actor)
    assert stream(log)[-1][2] == "done: use tools (5) (unknown tool 'session_time'; registered: calculate)"
    log = await run([(0.2, delegate("t", "what is the capital of italy", tools=["calculate"]))], BackgroundActor())
    assert stream(log)[-1][1:3] == ("failed", "I could not find that: what is the capital of italy")


async def test_a_side_effecting_tool_finishes_when_its_task_is_cancelled(autojump_clock) -> None:
    SENT.clear()
    scripts = {"mail": [("tool", ("send_email", {"to": "ana@example.com"})), ("sleep", 5.0)]}
    actor = BackgroundActor(ReasonerDouble(scripts), tools=ToolRegistry([send_email]))
    log = await run([(0.2, delegate("t", "mail")), (0.5, Cancel(task_id="t"))], actor)
    assert stream(log)[-1][1:3] == ("cancelled", "Cancel")
    assert SENT == ["ana@example.com"]  # the email went out in full, after the task was cancelled


def test_the_offline_planner_is_the_default_without_an_endpoint(monkeypatch) -> None:
    for name in ("MICROTURN_REASONER_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(default_reasoner(), OfflinePlanner) and isinstance(BackgroundActor().reasoner, OfflinePlanner)
    assert BackgroundActor().reasoner.name == "offline-planner"


# --- delegation from the live loop ---------------------------------------------------------------------------


def live() -> list[Actor]:
    tools = default_registry()
    return [
        ClockActor(),
        PerceptionDouble({2: "what is the capital of France?", 40: "and how many planets are there?"}),
        DialogDouble(),
        InteractionActor(tools=tools.names()),
        OutputMixer(),
        BackgroundActor(OfflinePlanner(), tools=tools),
        ToolRunner(tools),
    ]


async def test_a_delegated_question_is_answered_when_idle_and_replays_bit_for_bit(autojump_clock, tmp_path) -> None:
    path = tmp_path / "background.mtrec"
    async with open_session(live(), record=path) as session:
        await session.run_ticks(90)
    log = read_recording(path).messages
    first = of(log, Delegate)[0]
    assert first.goal == "what is the capital of France?" and "search_knowledge" in first.context.tools
    assert [h.text_heard for h in of(log, Heard)] == [
        "Let me look that up.",
        "The capital of France is Paris.",
        "Let me look that up.",
        "The solar system has eight planets: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune.",
    ]
    result = await replay(path, factory=live)
    assert result.ok, result.divergence
