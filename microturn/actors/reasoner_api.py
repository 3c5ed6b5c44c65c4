"""The background reasoner's backend interface: what turns a delegated goal into an answer.

A backend implements :class:`Reasoner`: ``await solve(task, io) -> str`` where ``task`` is the ``Delegate``
message (goal and complete context package) and ``io`` (:class:`TaskIO`) lets it report progress and call the
tools offered to it. It returns the final answer, or raises :class:`ReasonerError` with a message fit to log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from microturn.messages import Delegate, ToolResult
from microturn.tools import ToolRegistry

__all__ = ["REASONER_ENV", "Reasoner", "ReasonerError", "TaskIO"]

REASONER_ENV = {
    "url": ("MICROTURN_REASONER_URL", "OPENAI_BASE_URL"),
    "model": ("MICROTURN_REASONER_MODEL", "OPENAI_MODEL"),
    "api_key": ("MICROTURN_REASONER_API_KEY", "OPENAI_API_KEY"),
}
"""Environment variables read by :meth:`OpenAIChatReasoner.from_env`, first found wins."""


class ReasonerError(RuntimeError):
    """A task could not be finished; the message says why (it becomes the ``failed`` update's text)."""


class TaskIO(Protocol):
    """What a backend may use while it works on one task (the background actor provides it)."""

    task_id: str
    tools: ToolRegistry
    """The tools offered to this task (the registry, narrowed to the context package's tool list)."""

    def now(self) -> float:
        """Session time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep in session time."""
        ...

    async def progress(self, text: str) -> None:
        """Stream a progress update."""
        ...

    async def call_tool(self, name: str, args: Mapping[str, Any] | Any) -> ToolResult:
        """Run an offered tool (validated, with its timeout and concurrency limit); never raises for a tool's
        failure: the result says ``ok=False`` and why."""
        ...


class Reasoner(Protocol):
    """A background-reasoner backend."""

    name: str

    async def solve(self, task: Delegate, io: TaskIO) -> str:
        """Work on ``task`` and return the answer to speak; raise :class:`ReasonerError` to fail."""
        ...
