"""Subscriptions and the one serial mailbox each actor reads from.

A mailbox keeps one bounded queue per subscription (so each can have its own overflow policy) plus an unbounded
control lane. ``get`` returns control messages first, then the queued data message with the lowest bus
sequence number: one actor therefore sees data in exactly the order the bus published it, whatever the
policies dropped.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from microturn.messages import ControlMessage, Message, SystemMessage

from ._errors import SubscriptionError
from microturn.log import get_logger

__all__ = ["Overflow", "Subscribe", "Mailbox"]

log = get_logger("microturn.mailbox")


class Overflow(enum.Enum):
    """What happens when a subscription's queue is full."""

    BLOCK = "block"
    """The publisher waits (backpressure). For control and conversation messages."""
    DROP_OLDEST = "drop_oldest"
    """The oldest queued message of this subscription is dropped and counted. For media streams."""
    COALESCE = "coalesce"
    """The newest queued message is merged with the incoming one (by ``merge``, default: keep the new one)."""


class Subscribe:
    """One subscription: a message class (subclasses included), its overflow policy and its queue bound."""

    __slots__ = ("type", "overflow", "maxlen", "merge")

    def __init__(
        self,
        type: type[Message],  # noqa: A002 - reads naturally at the call site: Subscribe(UserAudio, ...)
        overflow: Overflow | str = Overflow.BLOCK,
        *,
        maxlen: int = 256,
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> None:
        if not (isinstance(type, builtins_type) and issubclass(type, Message)):
            raise SubscriptionError(f"Subscribe(type=...) must be a message class, got {type!r}")
        try:
            overflow = Overflow(overflow)
        except ValueError:
            choices = ", ".join(o.value for o in Overflow)
            raise SubscriptionError(f"Subscribe(overflow=...) must be one of {choices}, got {overflow!r}") from None
        if not isinstance(maxlen, int) or maxlen < 1:
            raise SubscriptionError(f"Subscribe(maxlen=...) must be a positive int, got {maxlen!r}")
        if overflow is not Overflow.BLOCK and issubclass(type, (ControlMessage, SystemMessage)):
            raise SubscriptionError(
                f"{type.__name__} is a {'control' if issubclass(type, ControlMessage) else 'system'} message "
                f"and is never dropped: its overflow must be 'block', got {overflow.value!r}"
            )
        if merge is not None and overflow is not Overflow.COALESCE:
            raise SubscriptionError("Subscribe(merge=...) only applies to overflow='coalesce'")
        self.type = type
        self.overflow = overflow
        self.maxlen = maxlen
        self.merge = merge

    def __repr__(self) -> str:
        return f"Subscribe({self.type.__name__}, {self.overflow.value!r}, maxlen={self.maxlen})"


builtins_type = type


class _Queue:
    """The bounded queue of one subscription inside a mailbox."""

    __slots__ = ("sub", "items", "mailbox", "dropped", "space_waiters", "blocking", "maxlen")

    def __init__(self, sub: Subscribe, mailbox: Mailbox) -> None:
        self.sub = sub
        self.items: deque[Message] = deque()
        self.mailbox = mailbox
        self.dropped = 0
        self.space_waiters: deque[trio.lowlevel.Task] = deque()
        self.blocking = sub.overflow is Overflow.BLOCK
        self.maxlen = sub.maxlen

    @property
    def full(self) -> bool:
        """True when a blocking publisher would have to wait."""
        return len(self.items) >= self.maxlen

    async def wait_space(self) -> None:
        """Park until the owning actor takes a message from this queue."""
        task = trio.lowlevel.current_task()
        self.space_waiters.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.space_waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def put(self, message: Message) -> None:
        """Enqueue without waiting; the caller has already waited for space when the policy is ``block``."""
        items = self.items
        if len(items) >= self.maxlen and not self.blocking:
            if self.sub.overflow is Overflow.COALESCE:
                old = items.pop()
                if self.sub.merge is not None:
                    message = self.sub.merge(old, message)
                self.mailbox.size -= 1
            else:
                old = items.popleft()
                self.mailbox.size -= 1
            self.dropped += 1
            log.info(
                "mailbox_drop",
                mailbox=self.mailbox.owner,
                message_type=type(old).__name__,
                policy=self.sub.overflow.value,
                dropped_seq=old.stamp.seq if old.stamp else None,
                dropped_total=self.dropped,
            )
        items.append(message)


class Mailbox:
    """One actor's serial mailbox: a control lane read first, then data in bus order."""

    __slots__ = ("owner", "control", "queues", "size", "turnstile", "_receiver", "_by_type", "_abort_get")

    def __init__(self, owner: str, subscriptions: list[Subscribe]) -> None:
        self.owner = owner
        self.control: deque[Message] = deque()
        self.queues: list[_Queue] = []
        self.size = 0
        self.turnstile: Any = None
        """Set in lockstep sessions: the turnstile that decides when this mailbox's actor runs."""
        self._receiver: trio.lowlevel.Task | None = None
        self._by_type: dict[type, _Queue | None] = {}
        self._abort_get = self._abort_receiver  # bound once: a parked get() allocates no closure per wait
        for sub in subscriptions:
            if any(q.sub.type is sub.type for q in self.queues):
                raise SubscriptionError(f"actor {owner!r} subscribes to {sub.type.__name__} twice")
            self.queues.append(_Queue(sub, self))

    def queue_for(self, message_type: type) -> _Queue | None:
        """The queue that takes ``message_type``: the first declared subscription it is a subclass of."""
        try:
            return self._by_type[message_type]
        except KeyError:
            found = next((q for q in self.queues if issubclass(message_type, q.sub.type)), None)
            self._by_type[message_type] = found
            return found

    @property
    def dropped(self) -> dict[str, int]:
        """Messages dropped or coalesced so far, by subscribed type name."""
        return {q.sub.type.__name__: q.dropped for q in self.queues if q.dropped}

    def put_control(self, message: Message) -> None:
        """Append to the control lane (unbounded: control is never dropped)."""
        self.control.append(message)
        self.size += 1
        self._wake()

    def put(self, queue: _Queue, message: Message) -> None:
        """Append to a subscription's queue (applying its overflow policy) and wake the reader."""
        if queue.blocking:  # the publisher already waited for room: no policy to apply
            queue.items.append(message)
        else:
            queue.put(message)
        self.size += 1
        if self.turnstile is not None:
            self.turnstile.notify()
        elif self._receiver is not None:
            receiver, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(receiver)

    def _wake(self) -> None:
        if self.turnstile is not None:
            self.turnstile.notify()
            return
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            trio.lowlevel.reschedule(receiver)

    def next_seq(self) -> int:
        """The sequence number of the message :meth:`get_nowait` would return (the mailbox is not empty)."""
        if self.control:
            return self.control[0].stamp.seq  # type: ignore[union-attr]
        return min(q.items[0].stamp.seq for q in self.queues if q.items)  # type: ignore[union-attr]

    def get_nowait(self) -> Message | None:
        """The next message (control lane first, then lowest seq), or None when empty."""
        if not self.size:
            return None
        self.size -= 1
        if self.control:
            return self.control.popleft()
        queues = self.queues
        if len(queues) == 1:  # one subscription: nothing to merge by sequence number
            best = queues[0]
            message = best.items.popleft()
            if best.space_waiters:
                trio.lowlevel.reschedule(best.space_waiters.popleft())
            return message
        best: _Queue | None = None
        best_seq = 0
        for queue in self.queues:
            items = queue.items
            if items:
                seq = items[0].stamp.seq  # type: ignore[union-attr]
                if best is None or seq < best_seq:
                    best, best_seq = queue, seq
        assert best is not None
        message = best.items.popleft()
        if best.space_waiters:
            trio.lowlevel.reschedule(best.space_waiters.popleft())
        return message

    async def get(self) -> Message:
        """Wait for and return the next message."""
        message = self.get_nowait()
        if message is not None:
            return message
        return await self.wait_next()

    async def wait_next(self) -> Message:
        """Park until a message arrives and return it; for a reader that has just seen :meth:`get_nowait`
        return None (the actor's serve loop), so the empty mailbox is not checked twice."""
        self._receiver = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort_get)
        message = self.get_nowait()
        assert message is not None
        return message

    def _abort_receiver(self, _: Any) -> trio.lowlevel.Abort:
        self._receiver = None
        return trio.lowlevel.Abort.SUCCEEDED
