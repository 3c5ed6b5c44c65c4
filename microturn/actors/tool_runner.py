"""The tool runner actor: runs registered tools concurrently with speech and listening.

Protocol:

- ``ToolCall(call_id, name, args, generation)`` -> exactly one ``ToolResult(call_id, ok, value | error,
  elapsed)``, ``elapsed`` in seconds of session time. In between, the tool may publish ``ToolProgress``.
- Only tools in the runner's :class:`~microturn.tools.ToolRegistry` ever run. An unknown name gets
  ``ToolResult(ok=False, error="unknown tool 'x'; registered: ...")`` at once; arguments that do not match the
  tool's parameters get an error naming the parameter and the value, and the tool never runs.
- Names handled by another actor are left to it: an actor that declares ``tool_names = ("x", ...)`` (a whole
  tool actor, see docs/tools.md) answers calls of those names itself; the runner neither runs nor refuses them.
- Each call runs as owned work, so calls run concurrently with each other and with the rest of the session.
  A tool's ``concurrency`` bounds its calls in flight (more wait for a slot); its ``timeout`` (session time,
  counted from when it gets a slot) cancels it with an error result.
- ``Cancel(task_id=call_id)``, or an ``Interrupt(generation=g)`` for a call of generation <= g, cancels the
  call; its result is ``ok=False, error="cancelled: <why>"``. **Side-effecting tools** (``@tool(side_effects=
  True)``) are never killed halfway — not by Cancel, barge-in or timeout: they finish and report (a
  ``ToolProgress`` says the request to stop was noted). Only the end of the session stops them.
- Announcements (``ToolContext.announce``; the ``set_timer`` tool) fire as ``BackgroundUpdate(task_id=<id>,
  status="final", text, delivery)`` at their session time; they are not tied to a generation (a barge-in
  does not cancel a timer); ``Cancel(task_id=<id>)`` calls one off (published as a silent ``cancelled``).

Everything waits on session time (``Actor.sleep``), so a lockstep session with tools is deterministic. Tools
that await sockets (``http_get``) belong in realtime sessions (see ``microturn.tools.http``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

import trio

from microturn.messages import BackgroundUpdate, Cancel, Interrupt, ToolCall, ToolProgress, ToolResult
from microturn.runtime import Actor, Overflow, Subscribe
from microturn.tools import (
    Tool,
    ToolArgumentError,
    ToolContext,
    ToolDefinitionError,
    ToolError,
    ToolRegistry,
    UnknownToolError,
    default_registry,
)
from microturn.tools.registry import Delivery

__all__ = ["CANCELLED", "ToolExecutor", "ToolRunner"]

CANCELLED = "cancelled"
"""The first word of a cancelled call's error (``"cancelled: interrupted (generation 3)"``)."""


class _TimedOut(Exception):
    """A call ran past its tool's timeout (turned into an error result, never raised out of the executor)."""


class ToolExecutor:
    """Runs registered tools on behalf of one actor (its ``host``): lookup, validation, concurrency slots,
    session-time timeouts, progress notes and announcements. The tool runner uses one; so does the background
    reasoner, for the tools its tasks call (share the registry to share the concurrency limits)."""

    def __init__(self, registry: ToolRegistry, host: Actor) -> None:
        self.registry = registry
        self.host = host
        self.announcements: dict[str, trio.CancelScope] = {}
        """Pending announcements (timers) by id."""
        self.realtime = host.session.clock.mode == "realtime"

    async def run(self, call_id: str, name: str, args: object) -> ToolResult:
        """Run one call to completion and return its result; never raises for a tool's own failure."""
        host = self.host
        started = host.now()

        def result(**fields: object) -> ToolResult:
            return ToolResult(call_id=call_id, elapsed=round(host.now() - started, 6), **fields)  # type: ignore[arg-type]

        try:
            tool = self.registry.get(name)
            kwargs = tool.validate(args)  # before waiting for a slot: a bad call fails at once, the tool never runs
        except (UnknownToolError, ToolArgumentError) as exc:
            host.log.info("tool_refused", call_id=call_id, tool=name, error=str(exc))
            return result(ok=False, error=str(exc))
        ctx = ToolContext(
            call_id,
            tool.name,
            now=host.now,
            sleep=host.sleep,
            progress=partial(self._progress, call_id),
            announce=self._announce,
            cancel_announcement=self.cancel_announcement,
        )
        async with self.registry.slots(tool.name):
            try:
                value = await self._timed(tool, kwargs, ctx)
            except _TimedOut:
                host.log.info("tool_timed_out", call_id=call_id, tool=name, timeout=tool.timeout)
                return result(ok=False, error=f"tool {name!r} timed out after {tool.timeout:g} s")
            except ToolError as exc:
                return result(ok=False, error=str(exc))
            except Exception as exc:
                host.log.warning("tool_failed", call_id=call_id, tool=name, error=repr(exc), exc_info=exc)
                return result(ok=False, error=f"tool {name!r} failed: {type(exc).__name__}: {exc}")
        return result(ok=True, value=value)

    async def _timed(self, tool: Tool, kwargs: dict[str, object], ctx: ToolContext) -> object:
        """Run the tool within its timeout, in session time. In lockstep the tool races a session timer (a
        trio deadline would be wrong there: trio's clock may jump while the session clock holds, see
        docs/decisions.md); in realtime session time is trio's clock, so a cancel-scope deadline does the
        same job without a watchdog task per call. A side-effecting tool is never cancelled: its watchdog
        only notes that it outlived its timeout."""
        timeout = tool.timeout
        if timeout is None:
            return await tool.call_validated(kwargs, ctx)
        if self.realtime and not tool.side_effects:
            with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                return await tool.call_validated(kwargs, ctx)
            assert scope.cancelled_caught
            raise _TimedOut
        run_scope = trio.CancelScope()
        outcome: list[object] = []
        failure: list[BaseException] = []

        async def watchdog() -> None:
            await self.host.sleep(timeout)
            if tool.side_effects:
                await ctx.progress(f"still running after {timeout:g} s; side-effecting tools are not interrupted")
                return
            run_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog)
            with run_scope:
                try:
                    outcome.append(await tool.call_validated(kwargs, ctx))
                except Exception as exc:  # noqa: BLE001 - re-raised below, outside the nursery's exception group
                    failure.append(exc)
            nursery.cancel_scope.cancel()
        if failure:
            raise failure[0]
        if run_scope.cancelled_caught:
            raise _TimedOut
        return outcome[0]

    async def _progress(self, call_id: str, text: str, fraction: float | None) -> None:
        await self.host.publish(ToolProgress(call_id=call_id, text=text, fraction=fraction))

    def _announce(self, after: float, text: str, delivery: Delivery, announcement_id: str) -> str:
        if announcement_id in self.announcements:
            raise ToolError(f"an announcement {announcement_id!r} is already pending")
        self.announcements[announcement_id] = self.host.spawn(
            self._fire, announcement_id, after, text, delivery, name=f"{self.host.name}:{announcement_id}"
        )
        return announcement_id

    async def _fire(self, announcement_id: str, after: float, text: str, delivery: Delivery) -> None:
        try:
            await self.host.sleep(after)
            self.announcements.pop(announcement_id, None)
            update = BackgroundUpdate(task_id=announcement_id, status="final", text=text, delivery=delivery)
            await self.host.publish(update)
        finally:
            self.announcements.pop(announcement_id, None)

    def cancel_announcement(self, announcement_id: str) -> bool:
        """Call off a pending announcement; False when none of that id is pending."""
        scope = self.announcements.pop(announcement_id, None)
        if scope is None:
            return False
        scope.cancel()
        return True


@dataclass
class _Running:
    call: ToolCall
    tool: Tool
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    started: float = 0.0
    reason: str | None = None
    declined: bool = False


class ToolRunner(Actor):
    """Runs the registered tools named by ``ToolCall`` s and publishes one ``ToolResult`` per call.

    ``tools`` is a :class:`~microturn.tools.ToolRegistry` or an iterable of tools (default: the built-ins,
    :func:`microturn.tools.default_registry`)."""

    subscriptions = (Subscribe(ToolCall, Overflow.BLOCK, maxlen=1024), Cancel, Interrupt)

    def __init__(self, tools: ToolRegistry | Iterable[Tool] | None = None, *, name: str = "tool_runner") -> None:
        super().__init__(name)
        if tools is None:
            tools = default_registry()
        self.registry = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
        self.results = 0
        """Results published so far."""

    async def on_start(self) -> None:
        """Find the tool names other actors answer, and refuse a name that two parts would both answer."""
        self.executor = ToolExecutor(self.registry, self)
        self.running: dict[str, _Running] = {}
        self.elsewhere: dict[str, str] = {}
        for actor in self.session.actors.values():
            if actor is self:
                continue
            for tool_name in getattr(actor, "tool_names", ()):
                if tool_name in self.registry:
                    raise ToolDefinitionError(
                        f"tool {tool_name!r} is registered with {self.name!r} and also answered by actor "
                        f"{actor.name!r}; drop one of them"
                    )
                self.elsewhere[tool_name] = actor.name

    async def handle(self, message: object) -> None:
        """Start calls, cancel them, and cancel timers."""
        match message:
            case ToolCall(call_id=call_id, name=tool_name):
                await self._start(message, call_id, tool_name)
            case Cancel(task_id=task_id, reason=reason):
                entry = self.running.get(task_id)
                if entry is not None:
                    await self._cancel(entry, f"Cancel ({reason})" if reason else "Cancel")
                elif self.executor.cancel_announcement(task_id):
                    await self.publish(BackgroundUpdate(task_id=task_id, status="cancelled", delivery="silent"))
            case Interrupt(generation=generation):
                for entry in sorted(self.running.values(), key=lambda e: e.call.call_id):
                    if entry.call.generation <= generation:
                        await self._cancel(entry, f"interrupted (generation {generation})")

    async def _start(self, call: ToolCall, call_id: str, tool_name: str) -> None:
        if tool_name not in self.registry:
            if tool_name in self.elsewhere:
                return  # a tool actor answers it
            names = sorted([*self.registry.names(), *self.elsewhere])
            error = str(UnknownToolError(tool_name, names))
            self.log.info("tool_refused", call_id=call_id, tool=tool_name, error=error)
            await self._publish(ToolResult(call_id=call_id, ok=False, error=error))
            return
        if call_id in self.running:
            await self._publish(ToolResult(call_id=call_id, ok=False, error=f"call id {call_id!r} is already running"))
            return
        entry = _Running(call=call, tool=self.registry.get(tool_name), started=self.now())
        self.running[call_id] = entry
        self.spawn(self._run_call, entry, name=f"{self.name}:{call_id}")

    async def _run_call(self, entry: _Running) -> None:
        call = entry.call
        result = None
        with entry.scope:
            result = await self.executor.run(call.call_id, call.name, call.args)
        self.running.pop(call.call_id, None)
        if result is None:
            elapsed = round(self.now() - entry.started, 6)
            result = ToolResult(call_id=call.call_id, ok=False, error=f"{CANCELLED}: {entry.reason}", elapsed=elapsed)
        await self._publish(result)

    async def _cancel(self, entry: _Running, reason: str) -> None:
        if entry.tool.side_effects:
            if entry.declined:
                return
            entry.declined = True
            self.log.info("cancel_declined", call_id=entry.call.call_id, tool=entry.tool.name, reason=reason)
            note = f"not cancelled ({reason}): side-effecting tools finish and report"
            await self.publish(ToolProgress(call_id=entry.call.call_id, text=note))
            return
        if entry.reason is None:
            entry.reason = reason
        entry.scope.cancel()

    async def _publish(self, result: ToolResult) -> None:
        self.results += 1
        self.log.info("tool_result", call_id=result.call_id, ok=result.ok, elapsed=result.elapsed, error=result.error)
        await self.publish(result)
