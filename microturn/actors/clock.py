"""The clock actor: cuts session time into micro-turns and publishes ``Tick(k)`` at the end of window k.

In realtime mode it sleeps to absolute deadlines (``origin + period * (k + 1)``, so it never drifts) and
measures how late each tick went out. In lockstep mode the same loop runs on the session clock's scheduler,
which only lets virtual time reach the next deadline once every actor has acknowledged the last tick.
"""

from __future__ import annotations

from microturn.messages import SessionStarted, Tick
from microturn.runtime import TICK_PRIORITY, Actor

__all__ = ["ClockActor"]


class ClockActor(Actor):
    """Publishes one ``Tick`` per period from ``SessionStarted`` on; stops after ``max_ticks`` if given."""

    subscriptions = (SessionStarted,)

    def __init__(self, *, max_ticks: int | None = None, name: str = "clock") -> None:
        super().__init__(name)
        if max_ticks is not None and max_ticks < 0:
            raise ValueError(f"ClockActor(max_ticks=...) must be >= 0, got {max_ticks!r}")
        self.max_ticks = max_ticks
        self.lateness: list[float] = []
        """Seconds each tick went out after its deadline (realtime), in tick order."""

    async def handle(self, message: object) -> None:
        """Start ticking once every actor is ready."""
        if isinstance(message, SessionStarted):
            self.spawn(self._tick_loop, name="clock:ticks")

    async def _tick_loop(self) -> None:
        session = self.session
        clock = session.clock
        realtime = clock.mode == "realtime"
        k = clock.tick
        while self.max_ticks is None or k < self.max_ticks:
            deadline = clock.deadline(k)
            await self.sleep_until(deadline, priority=TICK_PRIORITY)
            if session.closing:
                return
            lateness = max(0.0, clock.now() - deadline) if realtime else 0.0
            self.lateness.append(lateness)
            await self.publish(Tick(tick=k, lateness=lateness))
            clock.tick_published(k)
            k += 1
