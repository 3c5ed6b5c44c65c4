"""The session clock: session time, the tick counter, timers, and (in lockstep) the event scheduler.

Two modes, one code path for callers (``await clock.sleep_until(t)``):

- **realtime**: timers are absolute trio deadlines (``origin + t``); nothing waits for anyone.
- **lockstep**: every timer, tick deadline and scheduled input is an event in one heap. The scheduler fires
  one event at a time, and before the next it waits until the session has *settled*: no actor is inside a
  handler (the implicit acknowledgement of everything it was sent) and every trio task is blocked. Events at
  the same instant fire in a fixed order (ticks, then scheduled inputs, then timers, then by registration), so
  the outcome never depends on trio's randomised scheduling. Virtual time only moves forward through
  ``trio.sleep_until`` under a ``MockClock``, i.e. only when the whole session is quiescent; while an actor
  waits on something outside trio's clock (a thread, an HTTP server) it still holds its acknowledgement, so
  no virtual time passes and no session timer fires early.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import trio
import trio.testing

from ._errors import ClockModeError

__all__ = ["SessionClock", "TICK_PRIORITY", "INPUT_PRIORITY", "TIMER_PRIORITY", "Mode"]

Mode = Literal["realtime", "lockstep"]

TICK_PRIORITY = 0
"""Tick deadlines fire first at an instant: window k is [kP, (k+1)P), so an event at (k+1)P belongs to k+1."""
INPUT_PRIORITY = 1
"""Scheduled inputs (scenario, replay) fire after the tick at the same instant."""
TIMER_PRIORITY = 2
"""Actor timers fire last at an instant."""


class SessionClock:
    """Session time and timers for one session, in ``realtime`` or ``lockstep`` mode."""

    def __init__(self, mode: Mode = "lockstep", period: float = 0.2) -> None:
        if mode not in ("realtime", "lockstep"):
            raise ValueError(f"clock mode must be 'realtime' or 'lockstep', got {mode!r}")
        if not (isinstance(period, (int, float)) and math.isfinite(period) and period > 0):
            raise ValueError(f"tick period must be a positive number of seconds, got {period!r}")
        self.mode: Mode = mode
        self.period = float(period)
        self.tick = 0
        """Windows closed so far: the index of the window now open. Stamps carry it."""
        self._tick_waiters: list[tuple[int, trio.Event]] = []
        self.origin = 0.0
        self._now = 0.0
        self._heap: list[tuple[float, int, int, Any]] = []
        self._counter = itertools.count()
        self._holds = 0
        self._released: trio.Event | None = None
        self._pending: trio.Event | None = None
        self._started = False
        self._stopping = False
        self.stopped = trio.Event()
        """Set when the lockstep scheduler has fired everything due and stopped (see :meth:`stop`)."""

    # --- time ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Fix the session origin at the current trio time (call inside trio)."""
        if self.mode == "lockstep" and not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
            raise ClockModeError(
                "lockstep mode runs in virtual time and needs trio's MockClock: run it with "
                "microturn.runtime.run_lockstep(...), trio.run(..., clock=trio.testing.MockClock("
                "autojump_threshold=0)), or pytest-trio's autojump_clock fixture"
            )
        self._trio_now = trio.lowlevel.current_clock().current_time
        self.origin = self._trio_now()
        self._started = True

    def now(self) -> float:
        """Session time in seconds (exact event times in lockstep)."""
        if self.mode == "lockstep" or not self._started:
            return self._now
        return self._trio_now() - self.origin

    def tick_published(self, tick: int) -> None:
        """The clock actor published ``Tick(tick)``: window ``tick + 1`` is now open."""
        self.tick = tick + 1
        if self._tick_waiters:
            due = [w for w in self._tick_waiters if w[0] <= tick]
            self._tick_waiters = [w for w in self._tick_waiters if w[0] > tick]
            for _, event in due:
                event.set()

    async def wait_tick_published(self, tick: int) -> None:
        """Return once ``Tick(tick)`` has been published (realtime: no scheduler to wait on)."""
        if self.tick > tick:
            return
        event = trio.Event()
        self._tick_waiters.append((tick, event))
        await event.wait()

    def deadline(self, tick: int) -> float:
        """The session time at which window ``tick`` ends (computed, never accumulated, so it cannot drift)."""
        return self.period * (tick + 1)

    # --- acknowledgements (lockstep) -----------------------------------------------------------------------

    def hold(self) -> None:
        """An actor started handling a message: virtual time must not pass until it releases."""
        self._holds += 1

    def release(self) -> None:
        """The matching end of :meth:`hold`: the actor acknowledged what it was handling."""
        self._holds -= 1
        if not self._holds and self._released is not None:
            self._released.set()

    @property
    def holds(self) -> int:
        """How many acknowledgements are owed right now."""
        return self._holds

    # --- timers --------------------------------------------------------------------------------------------

    async def sleep_until(self, t: float, *, priority: int = TIMER_PRIORITY) -> None:
        """Sleep until session time ``t`` (in lockstep: until the scheduler reaches that event)."""
        if self.mode == "realtime":
            await trio.sleep_until(self.origin + t)
            return
        event = trio.Event()
        self._push(t, priority, event)
        await event.wait()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of session time."""
        await self.sleep_until(self.now() + seconds)

    def call_at(self, t: float, action: Callable[[], Awaitable[None]], *, priority: int = INPUT_PRIORITY) -> None:
        """Run ``action`` at session time ``t`` from the scheduler itself (lockstep only): used for scheduled
        inputs, so they land at a deterministic point relative to ticks and timers."""
        if self.mode != "lockstep":
            raise ClockModeError("call_at is for lockstep sessions; realtime inputs use tasks that sleep")
        self._push(t, priority, action)

    def _push(self, t: float, priority: int, item: Any) -> None:
        heapq.heappush(self._heap, (max(t, self._now), priority, next(self._counter), item))
        if self._pending is not None:
            self._pending.set()

    # --- the lockstep scheduler ----------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait until no acknowledgement is owed and every trio task is blocked (lockstep quiescence)."""
        while True:
            await trio.testing.wait_all_tasks_blocked()
            if not self._holds:
                return
            self._released = trio.Event()
            await self._released.wait()
            self._released = None

    def stop(self) -> None:
        """Ask the lockstep scheduler to fire every event due at or before the current session time, then
        stop (:attr:`stopped` is set): the end of a session is a deterministic point, not a race."""
        self._stopping = True
        if self._pending is not None:
            self._pending.set()

    async def run_scheduler(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Fire lockstep events in (time, priority, registration) order, settling between events."""
        task_status.started()
        heap = self._heap
        while True:
            await self.settle()
            if self._stopping and (not heap or heap[0][0] > self._now):
                self.stopped.set()
                return
            if not heap:
                self._pending = trio.Event()
                await self._pending.wait()
                self._pending = None
                continue
            t = heap[0][0]
            if t > self._now:
                await trio.sleep_until(self.origin + t)
                if heap[0][0] != t:  # something earlier was registered while we slept
                    continue
                self._now = t
            _, _, _, item = heapq.heappop(heap)
            if isinstance(item, trio.Event):
                item.set()
            else:
                await item()
