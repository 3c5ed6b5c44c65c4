"""Sessions: one bus, one clock, a set of supervised actors, and (optionally) a recording.

``open_session`` starts every actor through ``nursery.start`` (so the session is "started" only when every
actor is ready), publishes ``SessionStarted``, runs the body, then shuts down in order: the clock stops,
``SessionEnded`` is published and handled, each actor's ``on_stop`` runs, owned work is cancelled and the
recording is closed. No task is left behind.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
import trio.testing

from microturn.messages import Message, SessionEnded, SessionStarted

from ._actor import Actor, _root_cause, check_unique_names
from ._bus import Bus
from ._clock import INPUT_PRIORITY, TIMER_PRIORITY, Mode, SessionClock
from ._errors import SessionFailed
from microturn.log import current_session, get_logger
from ._recording import Recorder, RecordingHeader
from ._turnstile import Turnstile

__all__ = ["Session", "open_session", "run_lockstep"]

log = get_logger("microturn.session")
T = TypeVar("T")


class Session:
    """A running session: publish into it, schedule inputs, wait for ticks, read its statistics."""

    def __init__(self, session_id: str, clock: SessionClock, bus: Bus, actors: Sequence[Actor]) -> None:
        self.id = session_id
        self.clock = clock
        self.bus = bus
        self.actors = {actor.name: actor for actor in actors}
        self.closing = False
        self.turnstile = Turnstile(clock) if clock.mode == "lockstep" else None
        """Lockstep only: lets one actor step run at a time, in bus order."""
        self.failure: SessionFailed | None = None
        """Set when an actor failed beyond its restart policy."""
        self._nursery: trio.Nursery | None = None

    @property
    def last_tick(self) -> int:
        """The number of the last ``Tick`` published (-1 before the first)."""
        return self.clock.tick - 1

    def publish(self, message: Message, *, source: str = "external") -> Awaitable[Message]:
        """Publish a message from outside the actors (a transport, a scenario, a test); returns it stamped."""
        return self.bus.publish(message, source)

    def schedule(self, message: Message, at: float, *, source: str = "scenario") -> None:
        """Publish ``message`` at session time ``at``. In lockstep it lands at a fixed point: after the tick
        that ends at the same instant, before actor timers of that instant."""
        if at < 0:
            raise ValueError(f"schedule(at=...) must be a session time >= 0, got {at!r}")

        async def deliver() -> None:
            await self.bus.publish(message, source)

        if self.clock.mode == "lockstep":
            self.clock.call_at(at, deliver, priority=INPUT_PRIORITY)
        else:
            assert self._nursery is not None

            async def later() -> None:
                await self.clock.sleep_until(at)
                await deliver()

            self._nursery.start_soon(later)

    async def wait_tick(self, tick: int) -> None:
        """Return once ``Tick(tick)`` has been published (in lockstep: and everything it caused is handled)."""
        if self.clock.mode == "lockstep":
            await self.clock.sleep_until(self.clock.deadline(tick), priority=TIMER_PRIORITY)
        else:
            await self.clock.wait_tick_published(tick)

    async def run_ticks(self, count: int) -> None:
        """Let ``count`` more micro-turns pass."""
        await self.wait_tick(self.clock.tick + count - 1)

    async def run_for(self, seconds: float) -> None:
        """Let ``seconds`` of session time pass (rounded up to whole ticks)."""
        ticks = max(1, int(-(-round(seconds / self.clock.period, 9) // 1)))
        await self.run_ticks(ticks)

    def stats(self) -> dict[str, Any]:
        """Counters worth reporting: messages published, ticks, drops per actor, failures per actor."""
        return {
            "messages": self.bus.seq,
            "ticks": self.clock.tick,
            "dropped": {name: a.mailbox.dropped for name, a in self.actors.items() if a.mailbox.dropped},
            "failures": {name: a.failures for name, a in self.actors.items() if a.failures},
        }

    def _end(self, reason: str, error: str | None) -> None:
        """Publish ``SessionEnded`` without waiting (it must go out even while the session is failing)."""
        message = SessionEnded(reason=reason, ticks=self.clock.tick, error=error)  # type: ignore[arg-type]
        self.bus.publish_nowait(message, "session")


@asynccontextmanager
async def open_session(
    actors: Sequence[Actor],
    *,
    mode: Mode = "lockstep",
    tick_period: float = 0.2,
    session_id: str = "session",
    record: str | os.PathLike[str] | None = None,
    factory: str | None = None,
    params: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    taps: Sequence[Callable[[Message], None]] = (),
) -> AsyncIterator[Session]:
    """Run a session of ``actors`` for the duration of the ``async with`` body.

    Include a clock actor (``microturn.actors.ClockActor``) to get ticks. ``record`` writes every bus message
    to that file; ``taps`` are called with every stamped message from the first on; ``factory`` ("module:function", called with ``**params``) tells replay how to rebuild the
    actors. Lockstep mode needs a ``MockClock`` (see :func:`run_lockstep`). Raises :class:`SessionFailed`
    when an actor fails beyond its restart policy."""
    actors = list(actors)
    check_unique_names(actors)
    clock = SessionClock(mode, tick_period)
    clock.start()
    bus = Bus(clock)
    session = Session(session_id, clock, bus, actors)
    recorder = None
    if record is not None:
        header = RecordingHeader(
            session_id=session_id,
            mode=mode,
            tick_period=clock.period,
            actors=[a.name for a in actors],
            factory=factory,
            params=params or {},
            meta=meta or {},
        )
        recorder = Recorder(record, header)
        bus.add_tap(recorder)
    for tap in taps:
        bus.add_tap(tap)
    token = current_session.set((session_id, clock))
    outcome: tuple[str, str | None] = ("cancelled", None)
    try:
        async with trio.open_nursery() as nursery:
            session._nursery = nursery
            scheduler = trio.CancelScope()
            if mode == "lockstep":

                async def run_scheduler(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    with scheduler:
                        await clock.run_scheduler(task_status=task_status)

                await nursery.start(run_scheduler)
            for actor in actors:
                bus.attach(actor.mailbox)
                if session.turnstile is not None:
                    session.turnstile.register(actor.mailbox)
            for actor in actors:
                await nursery.start(actor._run, session, name=f"actor:{actor.name}")
            await bus.publish(
                SessionStarted(session_id=session_id, mode=mode, tick_period=clock.period, actors=list(session.actors)),
                "session",
            )
            log.info("session_started", actors=list(session.actors), mode=mode)
            try:
                yield session
                outcome = ("finished", None)
            finally:
                if outcome[0] == "finished":
                    await _close(session, scheduler)
                else:
                    session.closing = True
                    scheduler.cancel()
                    if session.failure is None:
                        session._end("cancelled", None)
                    else:
                        session._end("failed", str(session.failure))
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        cause = _root_cause(group)
        if isinstance(cause, BaseExceptionGroup):
            raise
        raise cause from None
    finally:
        current_session.reset(token)
        if recorder is not None:
            recorder.close()


async def _close(session: Session, scheduler: trio.CancelScope) -> None:
    """The orderly end of a session whose body finished."""
    clock = session.clock
    if clock.mode == "lockstep":
        clock.stop()
        await clock.stopped.wait()
    scheduler.cancel()
    session.closing = True
    session._end("finished", None)
    if clock.mode == "lockstep":
        await clock.settle()
    for actor in session.actors.values():
        await actor.on_stop()
    log.info("session_ended", **session.stats())


def run_lockstep(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``fn(*args)`` under trio with a virtual clock that jumps whenever everything is idle — what
    lockstep sessions, scenarios and replay need outside of pytest."""
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))

