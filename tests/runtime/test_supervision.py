"""Actors: owned work cancelled by generation, supervision and restarts, clean shutdown."""

import pytest
import trio

from microturn.actors import ClockActor
from microturn.messages import ActorFailed, ActorRestarted, Interrupt, SessionEnded, Tick, UserText
from microturn.runtime import Actor, RestartPolicy, SessionFailed, capture_logs, open_session


class Worker(Actor):
    """Test double: each UserText starts owned work in the current generation that runs until cancelled."""

    subscriptions = (UserText, Interrupt)

    def __init__(self):
        super().__init__("worker")
        self.generation = 0
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.finished: list[str] = []

    async def handle(self, message):
        match message:
            case UserText(text=text):
                self.spawn(self._work, text, generation=self.generation)
                if text == "next":
                    self.generation += 1

    async def _work(self, text):
        self.started.append(text)
        try:
            await self.sleep(10)
            self.finished.append(text)
        except trio.Cancelled:
            self.cancelled.append(text)
            raise


async def test_interrupt_cancels_owned_work_of_its_generation_and_older(autojump_clock):
    worker = Worker()
    async with open_session([worker]) as session:
        session.schedule(UserText(text="a"), at=0.1)
        session.schedule(UserText(text="next"), at=0.2)  # still generation 0, then moves to 1
        session.schedule(UserText(text="b"), at=0.3)  # generation 1
        session.schedule(Interrupt(generation=0), at=0.5)
        await session.clock.sleep_until(11)
    assert worker.started == ["a", "next", "b"]
    assert sorted(worker.cancelled) == ["a", "next"]
    assert worker.finished == ["b"]


class Flaky(Actor):
    """Test double: fails on every UserText saying 'boom'; counts starts; keeps what it handled."""

    subscriptions = (UserText, Interrupt)
    restart_policy = RestartPolicy(max_restarts=2, window=10.0)

    def __init__(self):
        super().__init__("flaky")
        self.starts = 0
        self.handled: list[str] = []

    async def on_start(self):
        self.starts += 1

    async def handle(self, message):
        match message:
            case UserText(text="boom"):
                raise ValueError("boom!")
            case UserText(text=text):
                self.handled.append(text)
            case Interrupt(generation=g):
                self.handled.append(f"interrupt {g}")


class BoomThenInterrupt(Actor):
    """Test double: in one step publishes a poison message followed by a control message."""

    subscriptions = (Tick,)

    async def handle(self, message):
        if message.tick == 0:
            await self.publish(UserText(text="boom"))
            await self.publish(UserText(text="after"))
            await self.publish(Interrupt(generation=7))


async def test_restart_keeps_the_mailbox_so_no_control_message_is_lost(autojump_clock):
    flaky = Flaky()
    seen = []
    async with open_session([ClockActor(max_ticks=2), BoomThenInterrupt(), flaky], taps=[seen.append]) as session:
        await session.run_ticks(2)
    # the Interrupt overtook the poison message; after the failure the queued data still arrives
    assert flaky.handled == ["interrupt 7", "after"]
    assert flaky.starts == 2
    failed = [m for m in seen if isinstance(m, ActorFailed)]
    restarted = [m for m in seen if isinstance(m, ActorRestarted)]
    assert len(failed) == 1 and failed[0].actor == "flaky" and "boom!" in failed[0].error
    assert failed[0].will_restart
    assert [m.restarts for m in restarted] == [1]


async def test_failures_beyond_the_policy_end_the_session_naming_actor_and_cause(autojump_clock):
    flaky = Flaky()
    seen = []
    with pytest.raises(SessionFailed) as info:
        async with open_session([ClockActor(), flaky], taps=[seen.append]) as session:
            for i in range(3):
                session.schedule(UserText(text="boom"), at=0.1 * (i + 1))
            await session.run_ticks(10)
    assert info.value.actor == "flaky"
    assert isinstance(info.value.cause, ValueError)
    assert "flaky" in str(info.value) and "boom!" in str(info.value)
    assert [m.will_restart for m in seen if isinstance(m, ActorFailed)] == [True, True, False]
    ended = seen[-1]
    assert isinstance(ended, SessionEnded) and ended.reason == "failed" and "flaky" in ended.error


async def test_failures_outside_the_window_are_forgiven(autojump_clock):
    flaky = Flaky()
    async with open_session([ClockActor(), flaky]) as session:
        for i in range(6):
            session.schedule(UserText(text="boom"), at=1 + 6.0 * i)  # two per 10 s window at most
        await session.run_for(40)
    assert flaky.failures == 6 and flaky.starts == 7


async def test_failure_in_owned_work_is_supervised_too(autojump_clock):
    class Spawner(Actor):
        subscriptions = (UserText,)
        restart_policy = RestartPolicy(max_restarts=0)

        async def handle(self, message):
            async def fail():
                await self.sleep(0.05)
                raise RuntimeError("worker died")

            self.spawn(fail)

    with pytest.raises(SessionFailed, match="worker died") as info:
        async with open_session([Spawner()]) as session:
            session.schedule(UserText(text="go"), at=0.1)
            await session.clock.sleep_until(1)
    assert info.value.actor == "spawner"


async def test_start_up_failure_fails_the_session(autojump_clock):
    class Broken(Actor):
        async def on_start(self):
            raise OSError("no device")

    with pytest.raises(SessionFailed, match="no device"):
        async with open_session([Broken()]):
            pass


def test_restart_policy_validates():
    with pytest.raises(ValueError, match="max_restarts"):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(ValueError, match="window"):
        RestartPolicy(window=0)


async def test_clean_shutdown_leaves_no_task_and_stops_every_actor(autojump_clock, tmp_path):
    class Lifecycle(Actor):
        subscriptions = (SessionEnded,)

        def __init__(self, name):
            super().__init__(name)
            self.events: list[str] = []

        async def on_start(self):
            self.events.append("start")
            self.spawn(trio.sleep_forever)

        async def handle(self, message):
            self.events.append(type(message).__name__)

        async def on_stop(self):
            self.events.append("stop")

    actors = [Lifecycle("one"), Lifecycle("two")]
    this_task = trio.lowlevel.current_task()
    before = list(this_task.child_nurseries)
    async with open_session([ClockActor(), *actors], record=tmp_path / "s.mtrec") as session:
        await session.run_ticks(3)
    for actor in actors:
        assert actor.events == ["start", "SessionEnded", "stop"]
    assert this_task.child_nurseries == before
    # the recording was closed: its last frame is complete and it ends with SessionEnded
    from microturn.runtime import read_recording

    rec = read_recording(tmp_path / "s.mtrec")
    assert not rec.truncated and isinstance(rec.messages[-1], SessionEnded)


async def test_a_fatal_cause_ends_the_session_at_once_without_a_traceback(autojump_clock):
    class Gone(RuntimeError):
        """Stands in for ModelServerLost: nothing a restart could mend."""

        fatal = True

    class Doomed(Actor):
        subscriptions = (UserText,)

        async def on_start(self) -> None:
            self.starts = getattr(self, "starts", 0) + 1

        async def handle(self, message) -> None:
            raise Gone("the model server went away")

    doomed = Doomed(name="interaction")
    seen = []
    with capture_logs() as logs, pytest.raises(SessionFailed) as info:
        async with open_session([ClockActor(), doomed], taps=[seen.append]) as session:
            session.schedule(UserText(text="hi"), at=0.1)
            await session.run_ticks(10)
    assert doomed.starts == 1  # never restarted
    assert isinstance(info.value.cause, Gone) and "the model server went away" in str(info.value)
    assert [m.will_restart for m in seen if isinstance(m, ActorFailed)] == [False]
    failed = [e for e in logs if e["event"] == "actor_failed"]
    assert failed and failed[0]["fatal"] is True and "exc_info" not in failed[0]


def test_model_server_lost_is_fatal():
    from microturn.model.sglang import ModelServerLost

    assert ModelServerLost.fatal is True
