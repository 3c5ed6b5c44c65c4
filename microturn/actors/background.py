"""The background reasoner actor: takes delegated tasks, works on them concurrently, streams results back.

Protocol:

- ``Delegate(task_id, goal, context, generation)`` starts a task (at most ``max_tasks`` run at once; the
  rest wait their turn). The task streams ``BackgroundUpdate(task_id, ...)``: ``started`` (text: the goal)
  -> ``progress`` (what it is doing: "checking the knowledge base…", "calling calculate…") -> exactly one of
  ``final`` (the answer), ``failed`` (why), ``cancelled`` (why).
- Delivery policy (:class:`DeliveryPolicy`): ``started``, ``progress`` and ``cancelled`` are ``silent`` (for
  the record, never spoken); a ``final`` is ``when_idle`` (spoken at the next pause) unless the goal is
  urgent ("urgent", "right away", "immediately", "asap", "right now") -> ``interrupt`` (spoken at once, cutting
  in); ``failed`` is ``when_idle`` (the assistant apologises at the next pause).
- ``Cancel(task_id)`` cancels a task; an ``Interrupt(generation=g)`` cancels tasks delegated in generation
  <= g (the user barged in on the exchange that asked for them) unless ``cancel_on_interrupt=False``. A
  task that runs past ``task_timeout`` seconds of session time fails.
- Tools: a task may call the tools of the actor's registry named in its context package's tool list (all of
  them when the list is empty), through a :class:`~microturn.actors.tool_runner.ToolExecutor` (validation,
  per-tool timeout and concurrency). Calls are recorded as ``ToolProgress`` notes of call ids
  ``"<task_id>/<tool>-<n>"``; their results go to the task, not to the conversation (the task's answer is
  what is spoken). A side-effecting tool call finishes even when its task is cancelled.

Backends (``reasoner=``, see :mod:`microturn.actors.reasoners`): the OpenAI-compatible streaming client when
an endpoint is configured, else the offline planner.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from microturn.messages import BackgroundUpdate, Cancel, Delegate, Interrupt, ToolProgress, ToolResult
from microturn.runtime import Actor, Overflow, Subscribe
from microturn.tools import Tool, ToolRegistry, UnknownToolError, default_registry
from microturn.tools.registry import Delivery

from .reasoners import Reasoner, ReasonerError, default_reasoner
from .tool_runner import ToolExecutor

__all__ = ["BackgroundActor", "DeliveryPolicy"]


class DeliveryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How each kind of update is delivered to the conversation."""

    final: Delivery = "when_idle"
    urgent: Delivery = "interrupt"
    failed: Delivery = "when_idle"
    progress: Delivery = "silent"
    urgent_words: tuple[str, ...] = ("urgent", "urgently", "right away", "immediately", "asap", "right now")

    def is_urgent(self, goal: str) -> bool:
        """Whether the goal asks for its answer at once."""
        low = goal.lower()
        return any(re.search(rf"\b{re.escape(w)}\b", low) for w in self.urgent_words)

    def delivery(self, status: str, goal: str) -> Delivery:
        """The delivery of an update with ``status`` for a task with ``goal``."""
        if status == "final":
            return self.urgent if self.is_urgent(goal) else self.final
        if status == "failed":
            return self.failed
        if status == "progress":
            return self.progress
        return "silent"


@dataclass
class _Task:
    task: Delegate
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    reason: str | None = None
    failed_by_timeout: bool = False
    calls: int = 0


class _ActorTaskIO:
    """The :class:`~microturn.actors.reasoners.TaskIO` the background actor gives each task."""

    def __init__(self, actor: BackgroundActor, entry: _Task, tools: ToolRegistry) -> None:
        self.actor = actor
        self.entry = entry
        self.task_id = entry.task.task_id
        self.tools = tools

    def now(self) -> float:
        return self.actor.now()

    async def sleep(self, seconds: float) -> None:
        await self.actor.sleep(seconds)

    async def progress(self, text: str) -> None:
        await self.actor._update(self.entry.task, "progress", text)

    async def call_tool(self, name: str, args: Mapping[str, Any] | Any) -> ToolResult:
        self.entry.calls += 1
        call_id = f"{self.task_id}/{name}-{self.entry.calls}"
        if name not in self.tools:
            return ToolResult(call_id=call_id, ok=False, error=str(UnknownToolError(name, self.tools.names())))
        await self.actor.publish(ToolProgress(call_id=call_id, text=f"{name} called by task {self.task_id}"))
        executor = self.actor.executor
        if not self.tools.get(name).side_effects:
            return await executor.run(call_id, name, args)
        # A side-effecting call runs as work of its own, so cancelling the task does not stop it halfway.
        done = trio.Event()
        box: list[ToolResult] = []

        async def run() -> None:
            result = await executor.run(call_id, name, args)
            box.append(result)
            done.set()
            if self.entry.scope.cancel_called:
                self.actor.log.info("side_effect_finished_after_cancel", call_id=call_id, ok=result.ok)

        self.actor.spawn(run, name=f"{self.actor.name}:{call_id}")
        await done.wait()
        return box[0]


class BackgroundActor(Actor):
    """Runs delegated tasks concurrently with a :class:`~microturn.actors.reasoners.Reasoner` and streams
    ``BackgroundUpdate`` s with a :class:`DeliveryPolicy`.

    ``reasoner`` defaults to :func:`~microturn.actors.reasoners.default_reasoner` (the OpenAI-compatible
    client when an endpoint is configured, else the offline planner); ``tools`` to the built-in registry
    (pass the tool runner's registry to share concurrency limits)."""

    subscriptions = (Subscribe(Delegate, Overflow.BLOCK, maxlen=256), Cancel, Interrupt)

    def __init__(
        self,
        reasoner: Reasoner | None = None,
        *,
        tools: ToolRegistry | Iterable[Tool] | None = None,
        policy: DeliveryPolicy | None = None,
        max_tasks: int = 4,
        task_timeout: float | None = 120.0,
        cancel_on_interrupt: bool = True,
        name: str = "background",
    ) -> None:
        super().__init__(name)
        if max_tasks < 1:
            raise ValueError(f"BackgroundActor(max_tasks=...) must be >= 1, got {max_tasks!r}")
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError(f"BackgroundActor(task_timeout=...) must be > 0 seconds or None, got {task_timeout!r}")
        self.reasoner = reasoner if reasoner is not None else default_reasoner()
        if tools is None:
            tools = default_registry()
        self.registry = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
        self.policy = policy or DeliveryPolicy()
        self.max_tasks = max_tasks
        self.task_timeout = task_timeout
        self.cancel_on_interrupt = cancel_on_interrupt

    async def on_start(self) -> None:
        """Fresh task table (after a restart, the tasks of the failed run are gone: they were owned work)."""
        self.executor = ToolExecutor(self.registry, self)
        self.tasks: dict[str, _Task] = {}
        self.slots = trio.Semaphore(self.max_tasks)
        self.log.info("reasoner", backend=self.reasoner.name)

    async def handle(self, message: object) -> None:
        """Start tasks; cancel them on Cancel or on an Interrupt of their generation."""
        match message:
            case Delegate(task_id=task_id):
                if task_id in self.tasks:
                    await self._update(message, "failed", f"task id {task_id!r} is already running")
                    return
                entry = _Task(task=message)
                self.tasks[task_id] = entry
                self.spawn(self._run_task, entry, name=f"{self.name}:{task_id}")
            case Cancel(task_id=task_id, reason=reason):
                entry = self.tasks.get(task_id)
                if entry is not None:
                    self._cancel(entry, f"Cancel ({reason})" if reason else "Cancel")
                elif self.executor.cancel_announcement(task_id):
                    await self.publish(BackgroundUpdate(task_id=task_id, status="cancelled", delivery="silent"))
            case Interrupt(generation=generation) if self.cancel_on_interrupt:
                for entry in self.tasks.values():
                    if entry.task.generation <= generation:
                        self._cancel(entry, f"interrupted (generation {generation})")

    def _cancel(self, entry: _Task, reason: str) -> None:
        if entry.reason is None:
            entry.reason = reason
        entry.scope.cancel()

    def _offered(self, task: Delegate) -> ToolRegistry:
        names = task.context.tools
        return self.registry.subset(names) if names else self.registry

    async def _run_task(self, entry: _Task) -> None:
        task = entry.task
        io = _ActorTaskIO(self, entry, self._offered(task))
        outcome: tuple[str, str] | None = None
        deadline = self.spawn(self._deadline, entry) if self.task_timeout is not None else None
        try:
            with entry.scope:
                async with self.slots:
                    await self._update(task, "started", task.goal)
                    try:
                        answer = await self.reasoner.solve(task, io)
                        outcome = ("final", answer)
                    except ReasonerError as exc:
                        outcome = ("failed", str(exc))
                    except Exception as exc:
                        self.log.warning("reasoner_failed", task_id=task.task_id, error=repr(exc), exc_info=exc)
                        outcome = ("failed", f"{self.reasoner.name} failed: {type(exc).__name__}: {exc}")
        finally:
            if deadline is not None:
                deadline.cancel()
            self.tasks.pop(task.task_id, None)
        if outcome is None:
            if entry.failed_by_timeout:
                outcome = ("failed", f"the task took longer than {self.task_timeout:g} s")
            else:
                outcome = ("cancelled", entry.reason or "cancelled")
        self.log.info("task_done", task_id=task.task_id, status=outcome[0])
        await self._update(task, *outcome)

    async def _deadline(self, entry: _Task) -> None:
        assert self.task_timeout is not None
        await self.sleep(self.task_timeout)
        if entry.reason is None:
            entry.failed_by_timeout = True
            self._cancel(entry, "timed out")

    async def _update(self, task: Delegate, status: str, text: str = "") -> None:
        delivery = self.policy.delivery(status, task.goal)
        update = BackgroundUpdate(task_id=task.task_id, status=status, text=text, delivery=delivery)  # type: ignore[arg-type]
        await self.publish(update)
