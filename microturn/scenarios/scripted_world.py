"""Test doubles of the world a scenario declares: a tool runner and a background reasoner that answer exactly
as the scenario scripts them (latency, result, failure), on session timers, so a run is deterministic.

They are not the real tool runner or background reasoner: they stand in for them, the way a scripted user
stands in for a person. With nothing declared they behave like the demo's stand-ins: ``session_time``
answers the session time after 50 ms, and every delegated task gets an honest "no background reasoner yet"
answer after 1 s.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from microturn.messages import BackgroundUpdate, Delegate, ToolCall, ToolResult
from microturn.runtime import Actor

from .format import BackgroundBehaviour, ToolBehaviour, pattern_problem

__all__ = ["DEFAULT_TOOLS", "ScriptedBackground", "ScriptedToolRunner"]

DEFAULT_TOOLS = (ToolBehaviour(name="session_time", latency_ms=50.0),)
"""The tools a scenario has when it declares none: the demo stand-in's ``session_time``."""


class ScriptedToolRunner(Actor):
    """Answers each ``ToolCall`` per the scenario's ``[[tools]]``: after ``latency_ms`` of session time, with
    the scripted result or error. Calls run side by side (owned work), so one slow tool does not hold up
    another. An undeclared tool fails at once with "unknown tool"."""

    subscriptions = (ToolCall,)

    def __init__(self, behaviours: Sequence[ToolBehaviour] = DEFAULT_TOOLS, *, name: str = "tool_runner") -> None:
        super().__init__(name)
        self.behaviours = {b.name: b for b in behaviours}
        self.calls = 0

    async def handle(self, message: object) -> None:
        """Start answering a call."""
        if isinstance(message, ToolCall):
            self.calls += 1
            self.spawn(self._answer, message, name=f"{self.name}:{message.call_id}")

    async def _answer(self, call: ToolCall) -> None:
        behaviour = self.behaviours.get(call.name)
        if behaviour is None:
            known = ", ".join(self.behaviours) or "none"
            error = f"unknown tool {call.name!r} (this scenario's tools: {known})"
            await self.publish(ToolResult(call_id=call.call_id, ok=False, error=error))
            return
        latency = behaviour.latency_ms / 1000
        await self.sleep(latency)
        if behaviour.error is not None:
            result = ToolResult(call_id=call.call_id, ok=False, error=behaviour.error, elapsed=latency)
        else:
            value = behaviour.result
            if value is None and call.name == "session_time":
                value = round(self.now(), 6)  # what the demo stand-in answers: the time of the answer
            result = ToolResult(call_id=call.call_id, ok=True, value=value, elapsed=latency)
        await self.publish(result)


class ScriptedBackground(Actor):
    """Answers each ``Delegate`` per the first ``[[background]]`` entry whose ``goal`` pattern matches the
    task's goal (case-insensitive search): ``started`` at once if asked, ``progress`` updates evenly spaced,
    then a final update (or a failed one when ``error`` is set) after ``latency_ms``. A goal no entry
    matches fails with a message saying so."""

    subscriptions = (Delegate,)

    def __init__(self, behaviours: Sequence[BackgroundBehaviour] = (), *, name: str = "background") -> None:
        super().__init__(name)
        self.behaviours = list(behaviours) or [BackgroundBehaviour()]
        self.tasks = 0

    async def handle(self, message: object) -> None:
        """Start working on a delegated task."""
        if isinstance(message, Delegate):
            self.tasks += 1
            self.spawn(self._work, message, name=f"{self.name}:{message.task_id}")

    def behaviour_for(self, goal: str) -> BackgroundBehaviour | None:
        """The first behaviour whose goal pattern matches ``goal``."""
        for behaviour in self.behaviours:
            if behaviour.goal is None:
                return behaviour
            if pattern_problem(behaviour.goal):  # unvalidated (a scenario from a recording): never run it
                continue
            if re.search(behaviour.goal, goal, re.IGNORECASE):
                return behaviour
        return None

    async def _work(self, task: Delegate) -> None:
        behaviour = self.behaviour_for(task.goal)
        if behaviour is None:
            text = f"no scripted background behaviour matches the goal {task.goal!r}"
            await self.publish(BackgroundUpdate(task_id=task.task_id, status="failed", text=text))
            return
        start = self.now()
        latency = behaviour.latency_ms / 1000
        if behaviour.started:
            await self.publish(BackgroundUpdate(task_id=task.task_id, status="started", delivery="silent"))
        steps = len(behaviour.progress) + 1
        for k, text in enumerate(behaviour.progress, 1):
            await self.sleep_until(start + latency * k / steps)
            await self.publish(BackgroundUpdate(task_id=task.task_id, status="progress", text=text, delivery="silent"))
        await self.sleep_until(start + latency)
        if behaviour.error is not None:
            update = BackgroundUpdate(task_id=task.task_id, status="failed", text=behaviour.error,
                                      delivery=behaviour.delivery)
        else:
            update = BackgroundUpdate(task_id=task.task_id, status="final", text=behaviour.result,
                                      delivery=behaviour.delivery)
        await self.publish(update)
