"""The bus and mailboxes: ordering, sequence numbers, overflow policies, the control lane."""

import pytest
import trio

from microturn.messages import Interrupt, Message, OutputChunk, Tick, UserAudio, UserText
from microturn.runtime import Actor, Overflow, Subscribe, SubscriptionError, capture_logs, open_session


class Collector(Actor):
    """Test double: records every message it handles, optionally gated so its mailbox fills up."""

    def __init__(self, subscriptions, name="collector"):
        self.subscriptions = subscriptions
        super().__init__(name)
        self.seen: list[Message] = []
        self.gate = trio.Event()
        self.gated = False

    async def handle(self, message):
        if self.gated:
            await self.gate.wait()
        self.seen.append(message)


def collector(*subs, name="collector"):
    return Collector(list(subs), name=name)


async def test_each_mailbox_sees_bus_order_and_seq_has_no_gaps(autojump_clock):
    a = collector(UserText, OutputChunk, name="a")
    b = collector(OutputChunk, name="b")
    stamped = []
    async with open_session([a, b], taps=[stamped.append]) as session:
        for i in range(50):
            if i % 3:
                await session.publish(UserText(text=str(i)))
            else:
                await session.publish(OutputChunk(tick=0, generation=0, text=str(i)))
        await session.clock.settle()
    seqs = [m.stamp.seq for m in stamped]
    assert seqs == list(range(1, len(stamped) + 1))
    assert [m.stamp.seq for m in a.seen] == sorted(m.stamp.seq for m in a.seen)
    assert len(a.seen) == 50
    assert [m.text for m in b.seen] == [str(i) for i in range(0, 50, 3)]


async def test_block_policy_really_blocks_the_publisher(autojump_clock):
    slow = collector(Subscribe(UserText, Overflow.BLOCK, maxlen=2), name="slow")
    slow.gated = True
    published = 0
    async with open_session([slow], mode="realtime") as session:

        async def producer():
            nonlocal published
            for i in range(5):
                await session.publish(UserText(text=str(i)))
                published += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            await trio.testing.wait_all_tasks_blocked()
            # one message is being handled (stuck at the gate), two are queued: the third publish waits
            assert published == 3
            assert len(slow.mailbox.queues[0].items) == 2
            slow.gate.set()
        assert published == 5
        await trio.testing.wait_all_tasks_blocked()
    assert [m.text for m in slow.seen] == ["0", "1", "2", "3", "4"]


async def test_drop_oldest_drops_counts_and_logs(autojump_clock):
    slow = collector(Subscribe(UserAudio, Overflow.DROP_OLDEST, maxlen=3), name="slow")
    slow.gated = True
    with capture_logs() as logs:
        async with open_session([slow], mode="realtime") as session:
            for i in range(10):
                await session.publish(UserAudio(pcm=bytes([i])))
            await trio.testing.wait_all_tasks_blocked()
            slow.gate.set()
            await trio.testing.wait_all_tasks_blocked()
            stats = session.stats()
    # publishing does not yield, so all ten arrive before the actor runs: only the newest three survive
    assert [m.pcm[0] for m in slow.seen] == [7, 8, 9]
    assert stats["dropped"] == {"slow": {"UserAudio": 7}}
    drops = [e for e in logs if e["event"] == "mailbox_drop"]
    assert [d["dropped_seq"] for d in drops] == list(range(2, 9))  # seq 1 is SessionStarted
    assert drops[-1]["dropped_total"] == 7 and drops[0]["mailbox"] == "slow"


async def test_coalesce_merges_into_the_newest_queued_message(autojump_clock):
    def join(old, new):
        return UserAudio(pcm=old.pcm + new.pcm, stamp=new.stamp)

    slow = collector(Subscribe(UserAudio, Overflow.COALESCE, maxlen=1, merge=join), name="slow")
    slow.gated = True
    async with open_session([slow], mode="realtime") as session:
        for i in range(5):
            await session.publish(UserAudio(pcm=bytes([i])))
        await trio.testing.wait_all_tasks_blocked()
        slow.gate.set()
        await trio.testing.wait_all_tasks_blocked()
    assert [m.pcm for m in slow.seen] == [b"\x00\x01\x02\x03\x04"]


async def test_control_lane_overtakes_queued_data(autojump_clock):
    actor = collector(UserText, Interrupt, name="actor")
    actor.gated = True
    async with open_session([actor], mode="realtime") as session:
        for i in range(3):
            await session.publish(UserText(text=str(i)))
        await session.publish(Interrupt(generation=1))
        await trio.testing.wait_all_tasks_blocked()
        actor.gate.set()
        await trio.testing.wait_all_tasks_blocked()
    kinds = [type(m).__name__ + (m.text if isinstance(m, UserText) else "") for m in actor.seen]
    # all four were queued before the actor ran: the Interrupt, published last, is handled first
    assert kinds == ["Interrupt", "UserText0", "UserText1", "UserText2"]


class Burst(Actor):
    """Test double: on a Tick publishes two data messages and then an Interrupt, in one handler."""

    subscriptions = (Tick,)

    async def handle(self, message):
        await self.publish(UserText(text="a"))
        await self.publish(UserText(text="b"))
        await self.publish(Interrupt(generation=1))


async def test_control_lane_overtakes_in_lockstep_too(autojump_clock):
    from microturn.actors import ClockActor

    actor = collector(UserText, Interrupt, name="actor")
    async with open_session([ClockActor(max_ticks=1), Burst(), actor]) as session:
        await session.run_ticks(1)
    # all three were queued while the burst held the baton; the control message is handled first
    assert [type(m).__name__ for m in actor.seen] == ["Interrupt", "UserText", "UserText"]


def test_subscription_errors_name_the_problem():
    with pytest.raises(SubscriptionError, match="overflow"):
        Subscribe(UserText, "sometimes")
    with pytest.raises(SubscriptionError, match="never dropped"):
        Subscribe(Tick, Overflow.DROP_OLDEST)
    with pytest.raises(SubscriptionError, match="maxlen"):
        Subscribe(UserText, maxlen=0)
    with pytest.raises(SubscriptionError, match="message class"):
        Subscribe(str)  # type: ignore[arg-type]
    with pytest.raises(SubscriptionError, match="twice"):
        collector(UserText, UserText)


async def test_publishing_a_non_message_is_refused(autojump_clock):
    async with open_session([]) as session:
        with pytest.raises(TypeError, match="only microturn messages"):
            await session.publish("hello")  # type: ignore[arg-type]
