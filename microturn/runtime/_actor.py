"""Actors: subscribe, handle one message at a time, publish. Supervised and restartable.

An actor declares the message classes it subscribes to (each with an overflow policy), then handles messages
one at a time from one serial mailbox whose control lane is read first. Long work runs in tasks the actor owns
(:meth:`Actor.spawn`), tagged with a generation id so an ``Interrupt`` cancels it at once. If the actor raises,
its owned work is cancelled and it is restarted per its :class:`RestartPolicy`; its mailbox is kept, so no
queued message (in particular no control message) is lost across the restart.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import msgspec
import trio

from microturn.messages import ActorFailed, ActorRestarted, Interrupt, Message

from ._clock import TIMER_PRIORITY
from ._errors import SessionFailed, SubscriptionError
from microturn.log import current_actor, get_logger
from ._mailbox import Mailbox, Subscribe

__all__ = ["Actor", "RestartPolicy"]

log = get_logger("microturn.actor")


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Restart an actor that raised, at most ``max_restarts`` times within ``window`` seconds of session time;
    one failure more ends the session with :class:`SessionFailed`."""

    max_restarts: int = 3
    window: float = 60.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"RestartPolicy.max_restarts must be >= 0, got {self.max_restarts!r}")
        if self.window <= 0:
            raise ValueError(f"RestartPolicy.window must be > 0 seconds, got {self.window!r}")


NEVER_RESTART = RestartPolicy(max_restarts=0)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _root_cause(exc: BaseException) -> BaseException:
    """The single leaf of nested exception groups, when there is exactly one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class Actor:
    """Base class of every actor. Subclasses set ``subscriptions`` and implement :meth:`handle`.

    Example::

        class Greeter(Actor):
            subscriptions = (UserText,)

            async def handle(self, message):
                match message:
                    case UserText(text=text):
                        await self.publish(OutputChunk(tick=self.tick, generation=0, text=f"hi, {text}"))
    """

    subscriptions: ClassVar[Sequence[Subscribe | type[Message]]] = ()
    """The message classes this actor receives (bare classes mean ``Subscribe(cls)``, i.e. ``block``)."""
    restart_policy: ClassVar[RestartPolicy] = RestartPolicy()
    """How often this actor may fail and be restarted before the session ends."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or _snake(type(self).__name__)
        subs = [s if isinstance(s, Subscribe) else Subscribe(s) for s in self.subscriptions]
        self.mailbox = Mailbox(self.name, subs)
        self.log = get_logger("microturn.actor", actor=self.name)
        """This actor's structlog logger (lazy: it follows the logging configuration in force when used)."""
        self._session: Any = None
        self._nursery: trio.Nursery | None = None
        self._generations: dict[int, set[trio.CancelScope]] = {}
        self.failures = 0

    # --- what subclasses implement -------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Set up before the session starts (and again after each restart)."""

    async def handle(self, message: Message) -> None:
        """Handle one message. Runs one at a time; control messages come before queued data."""

    async def on_stop(self) -> None:
        """Clean up when the session ends (the session clock is stopped; owned work is still running)."""

    # --- what subclasses use -------------------------------------------------------------------------------

    @property
    def session(self) -> Any:
        """The running session (set when the actor is started)."""
        if self._session is None:
            raise RuntimeError(f"actor {self.name!r} is not running in a session")
        return self._session

    @property
    def tick(self) -> int:
        """The micro-turn window now open."""
        return self.session.clock.tick

    def now(self) -> float:
        """Session time in seconds."""
        return self.session.clock.now()

    async def publish(self, message: Message) -> Message:
        """Publish on the session bus, stamped with this actor's name; returns the stamped message.

        In lockstep, owned work takes the baton for the publish, so its messages never race a handler's."""
        session = self._session
        if session is None:
            session = self.session  # raises the "not running in a session" error
        turnstile = session.turnstile
        if turnstile is None or turnstile.holds():
            return await session.bus.publish(message, self.name)
        await turnstile.acquire()
        try:
            return await session.bus.publish(message, self.name)
        finally:
            turnstile.release()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of session time (virtual in lockstep). Use this, never ``trio.sleep``, in actors."""
        await self.sleep_until(self.session.clock.now() + seconds)

    async def sleep_until(self, t: float, *, priority: int = TIMER_PRIORITY) -> None:
        """Sleep until session time ``t``. In lockstep the baton is passed on while sleeping, so other actors
        run and the clock can advance."""
        session = self.session
        turnstile = session.turnstile
        if turnstile is not None and turnstile.holds():
            turnstile.release()
            try:
                await session.clock.sleep_until(t, priority=priority)
            finally:
                with trio.CancelScope(shield=True):
                    await turnstile.acquire()
        else:
            await session.clock.sleep_until(t, priority=priority)

    def spawn(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        generation: int | None = None,
        name: str | None = None,
    ) -> trio.CancelScope:
        """Run ``fn(*args)`` as long work owned by this actor. Work tagged with a ``generation`` is cancelled by
        :meth:`cancel_generation` (and so by an ``Interrupt`` of that generation or a newer one)."""
        if self._nursery is None:
            raise RuntimeError(f"actor {self.name!r} cannot spawn work before it is started")
        scope = trio.CancelScope()
        turnstile = self.session.turnstile

        async def run() -> None:
            with scope:
                try:
                    if turnstile is not None:
                        # Lockstep: start at a scheduler event, once the session has settled, so two pieces of
                        # work spawned in one step start one after the other, never racing.
                        clock = self.session.clock
                        await clock.sleep_until(clock.now())
                    await fn(*args)
                finally:
                    if generation is not None:
                        scopes = self._generations.get(generation)
                        if scopes is not None:
                            scopes.discard(scope)
                            if not scopes:
                                del self._generations[generation]

        if generation is not None:
            self._generations.setdefault(generation, set()).add(scope)
        self._nursery.start_soon(run, name=name or f"{self.name}:{getattr(fn, '__name__', 'work')}")
        return scope

    def cancel_generation(self, generation: int) -> int:
        """Cancel all owned work tagged with ``generation`` or an older one; returns how many tasks."""
        cancelled = 0
        for gen in [g for g in self._generations if g <= generation]:
            for scope in self._generations.pop(gen):
                scope.cancel()
                cancelled += 1
        return cancelled

    # --- the runtime's side --------------------------------------------------------------------------------

    async def _serve(self) -> None:
        mailbox = self.mailbox
        turnstile = self.session.turnstile
        while True:
            if turnstile is None:
                message = mailbox.get_nowait()
                if message is None:
                    message = await mailbox.wait_next()
                if type(message) is Interrupt:
                    self.cancel_generation(message.generation)
                await self.handle(message)
                continue
            await turnstile.next_message_turn(mailbox)
            message = mailbox.get_nowait()
            assert message is not None
            if type(message) is Interrupt:
                self.cancel_generation(message.generation)
            await self.handle(message)
            # On an exception the baton stays held: supervision reports the failure and restarts the actor
            # before anyone else runs, so the restart happens at a deterministic point.
            turnstile.release()

    async def _run(self, session: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start, serve and supervise this actor inside ``session`` (started through ``nursery.start``)."""
        self._session = session
        current_actor.set(self.name)
        policy = self.restart_policy
        turnstile = session.turnstile
        recent: deque[float] = deque()
        started = False
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self.on_start()
                    if not started:
                        started = True
                        task_status.started()
                    else:
                        await self.publish(ActorRestarted(actor=self.name, restarts=self.failures))
                        if turnstile is not None:
                            turnstile.release()
                    await self._serve()
            except Exception as exc:  # noqa: BLE001 - supervision: every failure is reported, then judged
                if turnstile is not None and not turnstile.holds():
                    await turnstile.acquire()
                cause = _root_cause(exc)
                self._nursery = None
                self._generations.clear()
                self.failures += 1
                now = session.clock.now()
                recent.append(now)
                while recent and recent[0] <= now - policy.window:
                    recent.popleft()
                # A cause marked ``fatal`` (say, the model server went away for good) says plainly what ended the
                # session: a restart could not help, and a traceback would hide the one line that matters.
                fatal = bool(getattr(cause, "fatal", False))
                will_restart = started and not fatal and len(recent) <= policy.max_restarts
                self.log.error(
                    "actor_failed",
                    error=f"{type(cause).__name__}: {cause}",
                    failures=self.failures,
                    will_restart=will_restart,
                    **({"fatal": True} if fatal else {"exc_info": cause}),
                )
                await self.publish(
                    ActorFailed(
                        actor=self.name,
                        error=f"{type(cause).__name__}: {cause}",
                        failures=self.failures,
                        will_restart=will_restart,
                    )
                )
                if not will_restart:
                    failure = SessionFailed(self.name, cause)
                    session.failure = failure
                    if turnstile is not None:
                        turnstile.release()
                    raise failure from cause
            finally:
                self._nursery = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def check_unique_names(actors: Sequence[Actor]) -> None:
    """Refuse two actors with one name: stamps, logs and replay identify actors by name."""
    seen: set[str] = set()
    for actor in actors:
        if not isinstance(actor, Actor):
            raise SubscriptionError(f"open_session(actors=...) takes Actor instances, got {actor!r}")
        if actor.name in seen:
            raise SubscriptionError(f"two actors are named {actor.name!r}; give one a name=...")
        seen.add(actor.name)
