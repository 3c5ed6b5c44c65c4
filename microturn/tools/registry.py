"""Declaring tools: the ``@tool`` decorator, the :class:`Tool` it makes, what a running tool may use
(:class:`ToolContext`), and the :class:`ToolRegistry` — the only tools that can ever run.

::

    @tool(timeout=5.0)
    async def convert(celsius: float) -> float:
        \"\"\"Celsius to Fahrenheit.\"\"\"
        return celsius * 9 / 5 + 32

A parameter annotated ``ToolContext`` is filled in by the runner (it is not part of the schema): it gives the
tool session time, session-time sleeps, progress notes and announcements (speak later, e.g. a timer).

This package sits below the runtime (it imports neither ``microturn.runtime`` nor ``microturn.actors``): the
host that runs a tool (the tool runner actor, the background reasoner) hands it a :class:`ToolContext`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, TypeVar, get_type_hints, overload

import msgspec
import trio

from .errors import ToolDefinitionError, ToolError, UnknownToolError
from .schema import Param, build_args_type, convert_args, json_schema

__all__ = ["Tool", "ToolContext", "ToolRegistry", "tool", "Delivery", "DEFAULT_TIMEOUT", "DEFAULT_CONCURRENCY"]

Delivery = Literal["interrupt", "when_idle", "silent"]
DEFAULT_TIMEOUT = 10.0
"""Seconds of session time a tool may run before it is cancelled (unless it says otherwise)."""
DEFAULT_CONCURRENCY = 16
"""Calls of one tool that may run at once (more wait for a slot)."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class ToolContext:
    """What a running tool may use from its host. Everything is in session time, so a tool that sleeps or
    reads the time is deterministic in lockstep sessions.

    Outside a session (a unit test calling the function directly) use :meth:`standalone`."""

    def __init__(
        self,
        call_id: str,
        tool: str,
        *,
        now: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        progress: Callable[[str, float | None], Awaitable[None]] | None = None,
        announce: Callable[[float, str, Delivery, str], str] | None = None,
        cancel_announcement: Callable[[str], bool] | None = None,
    ) -> None:
        self.call_id = call_id
        """The id of the call being served."""
        self.tool = tool
        """The name of the tool being run."""
        self._now = now
        self._sleep = sleep
        self._progress = progress
        self._announce = announce
        self._cancel = cancel_announcement
        self._announced = 0

    @classmethod
    def standalone(cls, call_id: str = "direct", tool: str = "tool") -> ToolContext:
        """A context for calling a tool outside any session: trio's clock (from now) and ``trio.sleep``;
        progress notes and announcements are kept in :attr:`notes` and :attr:`announcements`."""
        origin = trio.current_time()
        ctx = cls(call_id, tool, now=lambda: trio.current_time() - origin, sleep=trio.sleep)
        ctx.notes: list[tuple[str, float | None]] = []  # type: ignore[misc]
        ctx.announcements: dict[str, tuple[float, str, str]] = {}  # type: ignore[misc]

        async def progress(text: str, fraction: float | None) -> None:
            ctx.notes.append((text, fraction))  # type: ignore[attr-defined]

        def announce(after: float, text: str, delivery: str, announcement_id: str) -> str:
            ctx.announcements[announcement_id] = (after, text, delivery)  # type: ignore[attr-defined]
            return announcement_id

        def cancel(announcement_id: str) -> bool:
            return ctx.announcements.pop(announcement_id, None) is not None  # type: ignore[attr-defined]

        ctx._progress, ctx._announce, ctx._cancel = progress, announce, cancel
        return ctx

    def now(self) -> float:
        """Session time in seconds."""
        return self._now()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of session time (virtual in lockstep). Never use ``trio.sleep`` in a tool."""
        await self._sleep(seconds)

    async def progress(self, text: str, fraction: float | None = None) -> None:
        """Report progress (published as a ``ToolProgress``); ``fraction`` in 0..1 when known."""
        if fraction is not None and not (isinstance(fraction, (int, float)) and 0.0 <= fraction <= 1.0):
            raise ValueError(f"progress(fraction=...) must be within 0..1, got {fraction!r}")
        if self._progress is not None:
            await self._progress(text, None if fraction is None else float(fraction))

    def announce(
        self, after: float, text: str, *, delivery: Delivery = "interrupt", announcement_id: str | None = None
    ) -> str:
        """Make the assistant say ``text`` ``after`` seconds of session time from now (a timer, a reminder).

        It arrives as a ``BackgroundUpdate(task_id=<id>, status="final", text, delivery)``, which the
        interaction model speaks (``interrupt``: at once; ``when_idle``: at the next pause). Returns the
        announcement id; a ``Cancel(task_id=<id>)`` (or :meth:`cancel_announcement`) calls it off."""
        if not (isinstance(after, (int, float)) and math.isfinite(after) and after >= 0):
            raise ValueError(f"announce(after=...) must be a number of seconds >= 0, got {after!r}")
        if delivery not in ("interrupt", "when_idle", "silent"):
            raise ValueError(f"announce(delivery=...) must be interrupt, when_idle or silent, got {delivery!r}")
        if self._announce is None:
            raise ToolError(f"tool {self.tool!r}: this host cannot make announcements")
        self._announced += 1
        if announcement_id is None:
            suffix = "" if self._announced == 1 else f"-{self._announced}"
            announcement_id = f"announce-{self.call_id}{suffix}"
        return self._announce(float(after), text, delivery, announcement_id)

    def cancel_announcement(self, announcement_id: str) -> bool:
        """Call off a pending announcement; False when there is none of that id (already said, or unknown)."""
        if self._cancel is None:
            return False
        return self._cancel(announcement_id)


class Tool:
    """A registered tool: an async function, its validated parameters and its JSON schema.

    Calling the ``Tool`` object calls the function as written (no validation), so tools stay easy to unit
    test; hosts use :meth:`invoke`, which validates first."""

    def __init__(
        self,
        fn: Callable[..., Awaitable[Any]],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        concurrency: int = DEFAULT_CONCURRENCY,
        side_effects: bool = False,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ToolDefinitionError(
                f"@tool needs an async function (async def), got {getattr(fn, '__qualname__', fn)!r}"
            )
        self.fn = fn
        self.name = name or fn.__name__
        if not self.name.replace("_", "a").replace("-", "a").isalnum():
            raise ToolDefinitionError(f"tool name must be letters, digits, '_' or '-', got {self.name!r}")
        doc = inspect.getdoc(fn) or ""
        self.description = description if description is not None else doc.split("\n\n", 1)[0].replace("\n", " ")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ToolDefinitionError(f"tool {self.name!r}: timeout must be > 0 seconds or None, got {timeout!r}")
        if not (isinstance(concurrency, int) and concurrency >= 1):
            raise ToolDefinitionError(f"tool {self.name!r}: concurrency must be an int >= 1, got {concurrency!r}")
        self.timeout = None if timeout is None else float(timeout)
        """Seconds of session time before the call is cancelled (side-effecting tools: only noted)."""
        self.concurrency = concurrency
        """How many calls of this tool may run at once."""
        self.side_effects = bool(side_effects)
        """A side-effecting tool is never cancelled halfway (not by barge-in, Cancel or timeout): it finishes
        and reports."""
        self.context_param, self.params = _inspect_params(self.name, fn)
        self.args_type = build_args_type(self.name, self.params)
        """The msgspec Struct a call's arguments are validated against."""
        self.schema = json_schema(self.args_type)
        """The JSON schema (an ``object``) of the parameters."""

    def validate(self, args: Mapping[str, Any] | Any) -> dict[str, Any]:
        """Check ``args`` against the parameters; returns the keyword arguments (defaults filled in). Raises
        :class:`~microturn.tools.ToolArgumentError` naming the parameter and the value."""
        return convert_args(self.name, self.args_type, args)

    async def invoke(self, args: Mapping[str, Any] | Any, ctx: ToolContext) -> Any:
        """Validate ``args``, run the tool and return its result as plain data (msgspec builtins: what a
        ``ToolResult`` carries and a recording stores)."""
        return await self.call_validated(self.validate(args), ctx)

    async def call_validated(self, kwargs: dict[str, Any], ctx: ToolContext) -> Any:
        """Run the tool with keyword arguments that :meth:`validate` returned; the result as plain data."""
        kwargs = dict(kwargs)
        if self.context_param is not None:
            kwargs[self.context_param] = ctx
        result = await self.fn(**kwargs)
        try:
            return msgspec.to_builtins(result)
        except TypeError as exc:
            raise ToolError(f"tool {self.name!r} returned a value that cannot be sent: {exc}") from None

    def openai_spec(self) -> dict[str, Any]:
        """The tool in OpenAI's chat-completions ``tools`` format."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.schema},
        }

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        flags = ", side_effects=True" if self.side_effects else ""
        return f"<Tool {self.name}({', '.join(p.name for p in self.params)}){flags}>"


def _inspect_params(name: str, fn: Callable[..., Any]) -> tuple[str | None, list[Param]]:
    """The tool's parameters (minus the injected context) with resolved annotations."""
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:  # noqa: BLE001 - any failure to resolve annotations is a definition error
        raise ToolDefinitionError(f"tool {name!r}: cannot resolve its annotations: {exc}") from None
    context_param = None
    params: list[Param] = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {name!r}: parameter {p.name!r} is *args/**kwargs; name every parameter")
        if p.kind is p.POSITIONAL_ONLY:
            raise ToolDefinitionError(f"tool {name!r}: parameter {p.name!r} is positional-only; tools take names")
        annotation = hints.get(p.name, inspect.Parameter.empty)
        if annotation is ToolContext:
            context_param = p.name
            continue
        if annotation is inspect.Parameter.empty:
            raise ToolDefinitionError(f"tool {name!r}: parameter {p.name!r} needs a type annotation")
        params.append(Param(p.name, annotation, p.default))
    return context_param, params


@overload
def tool(fn: F, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
    side_effects: bool = False,
) -> Callable[[F], Tool]: ...


def tool(
    fn: Callable[..., Awaitable[Any]] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
    side_effects: bool = False,
) -> Tool | Callable[[Callable[..., Awaitable[Any]]], Tool]:
    """Make an async function a :class:`Tool` (``@tool`` or ``@tool(timeout=..., side_effects=True, ...)``).

    The name defaults to the function's; the description to the first paragraph of its docstring. The
    parameters' annotations give the JSON schema and the validation."""

    def wrap(f: Callable[..., Awaitable[Any]]) -> Tool:
        return Tool(
            f, name=name, description=description, timeout=timeout, concurrency=concurrency,
            side_effects=side_effects,
        )

    return wrap(fn) if fn is not None else wrap


class ToolRegistry:
    """The tools a session may run, by name. Only registered tools can ever run: hosts look every call up
    here. Per-tool concurrency slots live here too, so hosts that share a registry share the limits."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Awaitable[Any]]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._slots: dict[str, trio.Semaphore] = {}
        for t in tools:
            self.register(t)

    def register(self, t: Tool | Callable[..., Awaitable[Any]]) -> Tool:
        """Add a tool (a :class:`Tool`, or an async function, which is decorated here); returns it."""
        made = t if isinstance(t, Tool) else tool(t)
        if made.name in self._tools:
            raise ToolDefinitionError(f"a tool named {made.name!r} is already registered")
        self._tools[made.name] = made
        return made

    def get(self, name: str) -> Tool:
        """The tool called ``name``; raises :class:`UnknownToolError` listing what is registered."""
        try:
            return self._tools[name]
        except (KeyError, TypeError):
            raise UnknownToolError(name, self.names()) from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._tools)

    def subset(self, names: Iterable[str]) -> ToolRegistry:
        """A registry of only the named tools that are registered here (sharing this one's slots)."""
        sub = ToolRegistry()
        wanted = set(names)
        sub._tools = {n: t for n, t in self._tools.items() if n in wanted}
        sub._slots = self._slots
        return sub

    def specs(self) -> list[dict[str, Any]]:
        """Every tool in OpenAI's chat-completions ``tools`` format, sorted by name."""
        return [self._tools[n].openai_spec() for n in self.names()]

    def slots(self, name: str) -> trio.Semaphore:
        """The concurrency slots of tool ``name`` (hosts hold one while a call runs)."""
        slots = self._slots.get(name)
        if slots is None:
            slots = self._slots[name] = trio.Semaphore(self.get(name).concurrency)
        return slots

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({', '.join(self.names())})"
