"""Example sessions, each a factory that replay can rebuild from a recording's header.

- :func:`live_spec` — the live loop (built by :mod:`microturn.assembly`): the real perception, dialog-state,
  interaction (the shipped model), output-mixer, tool-runner and background (offline planner) actors.
  ``microturn demo`` runs it.
- :func:`build` — seven light actors shaped like the reference pipeline around a trivial echo "model": they
  only move text, so the runtime itself can be shown and measured (the runtime benchmarks use it).
"""

from __future__ import annotations

from collections.abc import Sequence

from microturn.actors.clock import ClockActor
from microturn.assembly import PipelineSpec
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
    UserAudio,
    UserText,
)
from microturn.runtime import Actor, Overflow, Session, Subscribe

__all__ = ["build", "live_spec", "speak_line", "DEMO_LINES", "LIVE_LINES"]

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
    """Stands in for the background reasoner in the light demo: answers every delegated task, honestly."""

    subscriptions = (Delegate,)

    async def handle(self, message: object) -> None:
        if isinstance(message, Delegate):
            await self.sleep(1.0)
            text = "I have no background reasoner yet, so I cannot look that up."
            await self.publish(BackgroundUpdate(task_id=message.task_id, status="final", text=text))


class IdleTools(Actor):
    """Stands in for the tool runner: answers ``session_time`` after a short session-time delay; any other
    tool is unknown."""

    subscriptions = (ToolCall,)

    async def handle(self, message: object) -> None:
        if isinstance(message, ToolCall):
            await self.sleep(0.05)
            if message.name == "session_time":
                result = ToolResult(call_id=message.call_id, ok=True, value=self.now(), elapsed=0.05)
            else:
                result = ToolResult(call_id=message.call_id, ok=False, error=f"unknown tool {message.name!r}")
            await self.publish(result)


LIVE_LINES = [
    (0.4, "hello there"),
    (6.0, "what time is it?"),
    (13.0, "what is the capital of france?"),
    (18.6, "okay, stop, thanks"),  # talks over the answer: a barge-in
]
"""(session time, line) the live demo's user says."""


def speak_line(session: Session, text: str, at: float, *, transcript: bool = True, wpm: int = 175) -> float:
    """Schedule ``text`` as the user's speech from session time ``at``: espeak-ng audio in 200 ms messages
    (when espeak-ng is installed) and, as a streaming recogniser would, the transcript as the speech ends.
    Returns the session time the speech ends."""
    from microturn.audio import espeak_available, synthesize

    if not espeak_available():
        session.schedule(UserText(text=text), at)
        return at + 0.2
    pcm = synthesize(text, wpm=wpm)
    window = round(session.clock.period * 16000) * 2
    chunks = [pcm[i : i + window] for i in range(0, len(pcm), window)]
    for i, chunk in enumerate(chunks):
        session.schedule(UserAudio(pcm=chunk, sample_rate=16000), at + session.clock.period * i)
    end = at + session.clock.period * len(chunks)
    if transcript:
        session.schedule(UserText(text=text), end - session.clock.period)
    return end


def live_spec(*, model: str = "embedded", wav_path: str | None = None, tools: Sequence[str] = (),
              actors: Sequence[str] = (), recognizer: str = "none") -> PipelineSpec:
    """The live loop's description: ``model`` (the shipped ``embedded`` checkpoint by default, ``scripted`` for
    the rule policy, ``local:PATH`` ...), the built-in tools plus ``tools`` modules, the offline planner as
    background reasoner (the network client would not be deterministic in lockstep), ``actors`` plugins, and
    ``recognizer`` (``"pocketsphinx"``: the speech recognizer).
    :func:`microturn.assembly.build_pipeline` builds it; recordings carry it as their params."""
    return PipelineSpec(model=model, render_audio=wav_path is not None, wav_path=wav_path,
                        tool_modules=list(tools), actors=list(actors),
                        recognizer=recognizer)  # type: ignore[arg-type]


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
