"""The built-in tools: session time and elapsed time, timers, safe arithmetic, ``http_get`` and
``search_knowledge``. :func:`default_registry` puts them all in one registry.

Time is session time (seconds since the session started), never the wall clock, so a lockstep session that
asks for the time replays bit for bit.

Timers are how the assistant becomes time-aware: ``set_timer`` returns at once, and when the timer fires the
host publishes ``BackgroundUpdate(task_id="timer-<call_id>", status="final", text=<message>,
delivery="interrupt")`` — the interaction model says it at that moment, cutting in if it is speaking (a timer
that waits for a pause is late). ``cancel_timer`` (or a ``Cancel(task_id="timer-...")``) calls it off.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import msgspec

from .arith import calculate_expression
from .errors import ToolError
from .http import HttpPolicy, make_http_get
from .knowledge import make_search_knowledge
from .registry import Tool, ToolContext, ToolRegistry, tool

__all__ = [
    "session_time",
    "elapsed_time",
    "set_timer",
    "cancel_timer",
    "calculate",
    "builtin_tools",
    "default_registry",
    "say_duration",
]


@tool(timeout=1.0)
async def session_time(ctx: ToolContext) -> float:
    """Seconds since the conversation started (session time)."""
    return round(ctx.now(), 3)


@tool(timeout=1.0)
async def elapsed_time(
    ctx: ToolContext,
    since: Annotated[float, msgspec.Meta(ge=0, description="a session time in seconds, e.g. from session_time")],
) -> float:
    """Seconds of session time elapsed since an earlier session time."""
    now = ctx.now()
    if since > now + 1e-9:
        raise ToolError(f"since={since!r} is in the future (the session time is now {now:.3f})")
    return round(now - since, 3)


def say_duration(seconds: float) -> str:
    """A duration as it is said: "45 seconds", "5 minutes", "1 hour and 30 minutes"."""
    total = round(seconds)
    if total < 60 or total % 60 and total < 600:
        value = f"{seconds:g}" if seconds < 60 else str(total)
        return f"{value} second{'s' if value != '1' else ''}"
    hours, rest = divmod(total // 60, 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    if rest:
        parts.append(f"{rest} minute{'s' if rest != 1 else ''}")
    return " and ".join(parts)


@tool(timeout=1.0)
async def set_timer(
    ctx: ToolContext,
    seconds: Annotated[float, msgspec.Meta(gt=0, le=86400, description="how long until it fires")],
    message: Annotated[str, msgspec.Meta(max_length=200, description="what to say when it fires")] = "",
) -> dict[str, Any]:
    """Set a timer: after the given seconds the assistant says the message (or that the time is up)."""
    text = message.strip() or f"Your timer for {say_duration(seconds)} is done."
    timer_id = ctx.announce(seconds, text, delivery="interrupt", announcement_id=f"timer-{ctx.call_id}")
    return {"timer_id": timer_id, "seconds": seconds, "fires_at": round(ctx.now() + seconds, 3)}


@tool(timeout=1.0)
async def cancel_timer(ctx: ToolContext, timer_id: str) -> bool:
    """Cancel a timer set earlier (by its timer_id); false if it already fired or never existed."""
    return ctx.cancel_announcement(timer_id)


@tool(timeout=1.0)
async def calculate(
    expression: Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="e.g. (3 + 4) * 2^3")],
) -> int | float:
    """Evaluate an arithmetic expression: + - * / // % ** (or ^), parentheses, sqrt, round, pi..."""
    return calculate_expression(expression)


def builtin_tools(
    *,
    http: HttpPolicy | Iterable[str] | None = None,
    knowledge: str | Path | None = None,
) -> list[Tool]:
    """Every built-in tool. ``http`` is ``http_get``'s policy or allow-list (default: ``MICROTURN_HTTP_ALLOW``,
    empty when unset); ``knowledge`` the knowledge file (default: the shipped one)."""
    policy = HttpPolicy.from_env() if http is None else http if isinstance(http, HttpPolicy) else HttpPolicy(
        allow=tuple(http)
    )
    return [
        session_time,
        elapsed_time,
        set_timer,
        cancel_timer,
        calculate,
        make_http_get(policy),
        make_search_knowledge(knowledge),
    ]


BUILTIN_TOOL_NAMES = frozenset({"session_time", "elapsed_time", "set_timer", "cancel_timer", "calculate", "http_get",
                                "search_knowledge"})
"""The names :func:`builtin_tools` registers (a plugin tool may not take one)."""


def default_registry(
    *,
    http: HttpPolicy | Iterable[str] | None = None,
    knowledge: str | Path | None = None,
    extra: Iterable[Tool] = (),
) -> ToolRegistry:
    """A registry of the built-in tools plus ``extra`` ones."""
    return ToolRegistry([*builtin_tools(http=http, knowledge=knowledge), *extra])
