"""The bus: routes messages by type to mailboxes, stamps the session's global sequence number.

Publishing is atomic with respect to ordering: the publisher first waits until every ``block`` queue it will
deliver to has room, and only then takes a sequence number and delivers to all mailboxes without yielding.
So the sequence numbers have no gaps, and every mailbox receives messages in sequence order.
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from msgspec.structs import replace

from microturn.messages import ControlMessage, Message, Stamp

from ._clock import SessionClock
from ._mailbox import Mailbox, _Queue

__all__ = ["Bus"]

Tap = Callable[[Message], None]


class Bus:
    """Routes each published message to every mailbox subscribed to its type (or a base class of it)."""

    def __init__(self, clock: SessionClock) -> None:
        self.clock = clock
        self.seq = 0
        """The last sequence number handed out; the next message gets ``seq + 1``."""
        self._mailboxes: list[Mailbox] = []
        self._routes: dict[type, tuple[list[tuple[Mailbox, _Queue]], list[Mailbox]]] = {}
        self._taps: list[Tap] = []

    def attach(self, mailbox: Mailbox) -> None:
        """Route messages to ``mailbox`` from now on."""
        self._mailboxes.append(mailbox)
        self._routes.clear()

    def detach(self, mailbox: Mailbox) -> None:
        """Stop routing to ``mailbox``."""
        self._mailboxes.remove(mailbox)
        self._routes.clear()

    def add_tap(self, tap: Tap) -> None:
        """Call ``tap(message)`` synchronously with every stamped message, in sequence order (the recorder)."""
        self._taps.append(tap)

    def _route(self, message_type: type) -> tuple[list[tuple[Mailbox, _Queue]], list[Mailbox]]:
        data: list[tuple[Mailbox, _Queue]] = []
        control: list[Mailbox] = []
        for mailbox in self._mailboxes:
            queue = mailbox.queue_for(message_type)
            if queue is None:
                continue
            if issubclass(message_type, ControlMessage):
                control.append(mailbox)
            else:
                data.append((mailbox, queue))
        route = (data, control)
        self._routes[message_type] = route
        return route

    async def publish(self, message: Message, source: str) -> Message:
        """Stamp ``message`` and deliver it; waits only while a ``block`` subscriber's queue is full.
        Returns the stamped message."""
        await trio.lowlevel.checkpoint_if_cancelled()
        route = self._routes.get(type(message))
        if route is None:
            if not isinstance(message, Message):
                raise TypeError(f"only microturn messages can be published, got {message!r}")
            route = self._route(type(message))
        data, control = route
        for _, queue in data:
            if queue.blocking and len(queue.items) >= queue.maxlen:
                await self._wait_for_room(data)
                break
        return self._deliver(message, source, data, control)

    def publish_nowait(self, message: Message, source: str) -> Message:
        """Stamp and deliver ``message`` at once, past any ``block`` bound: for the runtime's own last word
        (``SessionEnded``), which must go out even while the session is failing."""
        data, control = self._routes.get(type(message)) or self._route(type(message))
        return self._deliver(message, source, data, control)

    def _deliver(
        self, message: Message, source: str, data: list[tuple[Mailbox, _Queue]], control: list[Mailbox]
    ) -> Message:
        clock = self.clock
        self.seq = seq = self.seq + 1
        stamped = replace(message, stamp=Stamp(tick=clock.tick, seq=seq, source=source, time=clock.now()))
        for tap in self._taps:
            tap(stamped)
        for mailbox, queue in data:
            mailbox.put(queue, stamped)
        for mailbox in control:
            mailbox.put_control(stamped)
        return stamped

    @staticmethod
    async def _wait_for_room(data: list[tuple[Mailbox, _Queue]]) -> None:
        """Wait until every ``block`` queue of a route has room at the same time (backpressure)."""
        while True:
            for _, queue in data:
                if queue.blocking and len(queue.items) >= queue.maxlen:
                    await queue.wait_space()
                    break
            else:
                return
