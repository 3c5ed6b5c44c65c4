"""The session clock and the clock actor: lockstep acknowledgements, ordering at one instant, realtime mode."""

import threading

import pytest
import trio

from microturn.actors import ClockActor
from microturn.messages import Tick, UserText
from microturn.runtime import Actor, ClockModeError, SessionClock, open_session


async def test_ticks_mark_the_end_of_each_window(autojump_clock):
    seen = []
    async with open_session([ClockActor()], taps=[seen.append]) as session:
        await session.run_ticks(5)
    ticks = [m for m in seen if isinstance(m, Tick)]
    assert [t.tick for t in ticks] == [0, 1, 2, 3, 4]
    assert [t.stamp.time for t in ticks] == [pytest.approx(0.2 * (k + 1)) for k in range(5)]
    assert [t.stamp.tick for t in ticks] == [0, 1, 2, 3, 4]  # a Tick is stamped with the window it closes


async def test_period_is_configurable_and_max_ticks_stops_the_clock(autojump_clock):
    seen = []
    async with open_session([ClockActor(max_ticks=3)], tick_period=0.05, taps=[seen.append]) as session:
        await session.clock.sleep_until(1.0)
    ticks = [m for m in seen if isinstance(m, Tick)]
    assert len(ticks) == 3 and ticks[-1].stamp.time == pytest.approx(0.15)


class ThreadBound(Actor):
    """Test double: on every Tick waits for a worker thread that the test releases."""

    subscriptions = (Tick,)

    def __init__(self):
        super().__init__("thread_bound")
        self.release = threading.Event()
        self.handled: list[int] = []

    async def handle(self, message):
        await trio.to_thread.run_sync(self.release.wait)
        self.handled.append(message.tick)


async def test_lockstep_waits_for_an_actor_blocked_outside_trio(autojump_clock):
    actor = ThreadBound()
    seen = []
    async with open_session([ClockActor(), actor], taps=[seen.append]) as session:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run_ticks, 3)
            # Let 5 s of trio's virtual time go by: Tick 0 is out and its handler is stuck in a thread, so the
            # session clock stands still — no session time passes and no Tick 1 goes out.
            await trio.sleep(5)
            assert session.clock.now() == pytest.approx(0.2)
            assert [m.tick for m in seen if isinstance(m, Tick)] == [0]
            assert session.clock.holds == 1
            actor.release.set()
    assert actor.handled == [0, 1, 2]


class Timers(Actor):
    """Test double: handlers that sleep on session timers and publish when they wake."""

    subscriptions = (UserText,)

    async def handle(self, message):
        await self.sleep(float(message.text))
        await self.publish(UserText(text=f"woke after {message.text}"))


async def test_events_at_one_instant_fire_in_a_fixed_order(autojump_clock):
    seen = []
    async with open_session([ClockActor(), Timers()], taps=[seen.append]) as session:
        session.schedule(UserText(text="0.2"), at=0.2)  # an input at the same instant as Tick 0
        session.schedule(UserText(text="0.3"), at=0.1)  # its timer fires at 0.4, with Tick 1
        await session.run_ticks(3)
    order = [
        (type(m).__name__, getattr(m, "tick", None) if isinstance(m, Tick) else m.text)
        for m in seen
        if isinstance(m, (Tick, UserText))
    ]
    assert order == [
        ("UserText", "0.3"),
        ("Tick", 0),
        ("UserText", "0.2"),
        ("Tick", 1),
        ("UserText", "woke after 0.3"),
        ("Tick", 2),
        ("UserText", "woke after 0.2"),
    ]


async def test_lockstep_refuses_a_real_clock():
    with pytest.raises(ClockModeError, match="MockClock"):
        async with open_session([ClockActor()], mode="lockstep"):
            pass


def test_clock_validates_its_arguments():
    with pytest.raises(ValueError, match="mode"):
        SessionClock("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period"):
        SessionClock("realtime", 0)


async def test_realtime_ticks_at_absolute_deadlines_and_measures_lateness():
    clock = ClockActor(max_ticks=5)
    seen = []
    async with open_session([clock], mode="realtime", tick_period=0.01, taps=[seen.append]) as session:
        await session.wait_tick(4)
    ticks = [m for m in seen if isinstance(m, Tick)]
    assert [t.tick for t in ticks] == [0, 1, 2, 3, 4]
    assert len(clock.lateness) == 5 and all(late >= 0 for late in clock.lateness)
    # each tick goes out at or after its own deadline: deadlines are absolute, so lateness never accumulates
    for t in ticks:
        assert t.stamp.time >= 0.01 * (t.tick + 1)
        assert t.lateness == pytest.approx(t.stamp.time - 0.01 * (t.tick + 1), abs=0.005)
