"""The lockstep turnstile: actor handlers run one at a time, in bus order.

Two actors that receive the same message would otherwise run in whatever order trio's (deliberately
randomised) scheduler picks, and whichever publishes first gets the lower sequence number. In lockstep the
turnstile removes that freedom: exactly one holder of the baton at a time — a message handler for its whole
run (except while it sleeps on a session timer), or an actor's owned work for the length of one publish —
and when the baton is free it goes first to owned work waiting to publish, then to the mailbox whose next
message has the lowest sequence number (ties: actor registration order). Holding the baton is also holding
the session clock (an owed acknowledgement), so virtual time stands still while a handler is under way, even
one waiting on a thread or a socket.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from ._clock import SessionClock
    from ._mailbox import Mailbox

__all__ = ["Turnstile"]


class Turnstile:
    """Grants the one baton of a lockstep session."""

    def __init__(self, clock: SessionClock) -> None:
        self.clock = clock
        self.owner: trio.lowlevel.Task | None = None
        self._mailboxes: list[Mailbox] = []
        self._readers: dict[Mailbox, trio.lowlevel.Task] = {}
        self._tasks: deque[trio.lowlevel.Task] = deque()

    def register(self, mailbox: Mailbox) -> None:
        """Take part in baton passing (registration order breaks ties)."""
        self._mailboxes.append(mailbox)
        mailbox.turnstile = self

    def notify(self) -> None:
        """Hand the free baton to the next in line, if anyone is waiting for it."""
        if self.owner is not None:
            return
        if self._tasks:
            self._grant(self._tasks.popleft())
            return
        best: Mailbox | None = None
        best_seq = 0
        readers = self._readers
        for mailbox in self._mailboxes:
            if mailbox.size and mailbox in readers:
                seq = mailbox.next_seq()
                if best is None or seq < best_seq:
                    best, best_seq = mailbox, seq
        if best is not None:
            self._grant(readers.pop(best))

    def _grant(self, task: trio.lowlevel.Task) -> None:
        self.owner = task
        self.clock.hold()
        if task is not trio.lowlevel.current_task():  # the asker itself is running, not parked
            trio.lowlevel.reschedule(task)

    async def next_message_turn(self, mailbox: Mailbox) -> None:
        """Wait until ``mailbox``'s actor holds the baton and its next message is due."""
        task = trio.lowlevel.current_task()
        self._readers[mailbox] = task

        def abort(_: Any) -> trio.lowlevel.Abort:
            if self._readers.get(mailbox) is task:
                del self._readers[mailbox]
            return trio.lowlevel.Abort.SUCCEEDED

        self.notify()
        if self.owner is task:
            return
        await self._park(abort, task)

    async def acquire(self) -> None:
        """Take the baton for the current task (owned work resuming), waiting if it is held."""
        task = trio.lowlevel.current_task()
        if self.owner is None and not self._tasks:
            self.owner = task
            self.clock.hold()
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        self._tasks.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._tasks.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await self._park(abort, task)

    async def _park(self, abort: Any, task: trio.lowlevel.Task) -> None:
        try:
            await trio.lowlevel.wait_task_rescheduled(abort)
        except BaseException:
            # Cancelled after the baton was granted but before we ran: give it back so nobody starves.
            if self.owner is task:
                self.release()
            raise

    def holds(self) -> bool:
        """True when the current task holds the baton."""
        return self.owner is trio.lowlevel.current_task()

    def release(self) -> None:
        """Give the baton back and pass it on."""
        self.owner = None
        self.clock.release()
        self.notify()
