"""A small, complete example session: seven actors shaped like the reference pipeline, with a trivial echo
"model". It is what ``microturn demo`` runs, what the runtime benchmarks load, and a factory replay can
rebuild (``microturn.demo:build``). The real perception, dialog and interaction actors live in
``microturn.actors``; these stand-ins only move text, so the runtime can be shown and measured on its own.
"""

from __future__ import annotations

from microturn.actors.clock import ClockActor
from microturn.messages import (
    BackgroundUpdate,
    Delegate,
    DialogState,
    InputChunk,
    Interrupt,
    OutputChunk,
    Playout,
    Tick,
    ToolCall,
    ToolResult,
    UserText,
)
from microturn.runtime import Actor, Overflow, Subscribe

__all__ = ["build", "DEMO_LINES"]

DEMO_LINES = [(0.3, "hello there"), (1.9, "what time is it"), (3.1, "thanks, bye")]
"""(session time, text) the demo user says."""


class TextPerception(Actor):
    """Closes each window: the text that arrived becomes that tick's ``InputChunk``."""

    subscriptions = (Tick, Subscribe(UserText, Overflow.BLOCK))

    async def on_start(self) -> None:
        self.pending: list[str] = []

    async def handle(self, message: object) -> None:
        match message:
            case UserText(text=text):
                self.pending.append(text)
            case Tick(tick=tick):
                text, self.pending = " ".join(self.pending), []
                await self.publish(InputChunk(tick=tick, text=text, speech_prob=1.0 if text else 0.0))


class FloorTracker(Actor):
    """Publishes a ``DialogState`` whenever who holds the floor changes."""

    subscriptions = (InputChunk, OutputChunk)

    async def on_start(self) -> None:
        self.state = ("none", "pausing", "silent")

    async def handle(self, message: object) -> None:
        match message:
            case InputChunk(text=text) if text:
                new = ("user", "yielding", "silent")
            case OutputChunk(text=text) if text:
                new = ("assistant", "pausing", "speaking")
            case OutputChunk():
                new = ("none", "pausing", "silent")
            case _:
                return
        if new != self.state:
            self.state = new
            await self.publish(DialogState(floor=new[0], user=new[1], assistant=new[2]))  # type: ignore[arg-type]


class EchoModel(Actor):
    """A trivial "model": one output chunk per input chunk, echoing what it heard two words per tick."""

    subscriptions = (InputChunk, Interrupt, ToolResult, BackgroundUpdate)

    async def on_start(self) -> None:
        self.queue: list[str] = []
        self.generation = 0

    async def handle(self, message: object) -> None:
        match message:
            case InputChunk(tick=tick, text=text):
                if text:
                    self.generation += 1
                    self.queue = ["you", "said:", *text.split()]
                words, self.queue = self.queue[:2], self.queue[2:]
                await self.publish(OutputChunk(tick=tick + 1, generation=self.generation, text=" ".join(words)))
            case Interrupt():
                self.queue = []


class TextMixer(Actor):
    """Turns output chunks into what plays in each window."""

    subscriptions = (Subscribe(OutputChunk, Overflow.BLOCK),)

    async def handle(self, message: object) -> None:
        if isinstance(message, OutputChunk) and message.text:
            await self.publish(Playout(tick=message.tick, utterance_id=message.generation, text=message.text))


class IdleBackground(Actor):
    """Stands in for the background reasoner: acknowledges delegated tasks."""

    subscriptions = (Delegate,)

    async def handle(self, message: object) -> None:
        if isinstance(message, Delegate):
            await self.publish(BackgroundUpdate(task_id=message.task_id, status="final", text="done"))


class IdleTools(Actor):
    """Stands in for the tool runner: answers every call after a short session-time delay."""

    subscriptions = (ToolCall,)

    async def handle(self, message: object) -> None:
        if isinstance(message, ToolCall):
            await self.sleep(0.05)
            await self.publish(ToolResult(call_id=message.call_id, ok=True, value=None, elapsed=0.05))


def build(max_ticks: int | None = None) -> list[Actor]:
    """The seven demo actors (clock included). Replay rebuilds them from ``"microturn.demo:build"``."""
    return [
        ClockActor(max_ticks=max_ticks),
        TextPerception(name="perception"),
        FloorTracker(name="dialog_state"),
        EchoModel(name="interaction"),
        TextMixer(name="output_mixer"),
        IdleBackground(name="background"),
        IdleTools(name="tool_runner"),
    ]
