"""The interaction-model protocol: what every backend (scripted, local torch, sglang) implements.

A backend opens one :class:`ModelSession` per conversation. Each tick the interaction actor calls
``step`` with that tick's :class:`StepInput` (the perception chunk plus the other input streams: dialog
state, background updates, tool results, what the user heard) and gets a :class:`StepOutput` for the next
window. History stays inside the model session between ticks: a step costs O(chunk), not O(history).

This module is deliberately free of torch so actors depend on the contract, not on a framework.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import msgspec

from microturn.messages import BackgroundUpdate, DialogState, Heard, InputChunk, ToolResult

__all__ = [
    "ModelSpec",
    "StepInput",
    "ToolRequest",
    "StepOutput",
    "ModelSession",
    "BlockingModelSession",
    "ModelBackend",
    "ModelError",
    "CONTROL_TOKENS",
]

CONTROL_TOKENS = ("silence", "speak", "backchannel", "end_utterance", "delegate", "tool_call", "pause", "resume")
"""Control tokens a step may emit in ``StepOutput.controls``. ``pause`` holds the playout of the utterance being
heard where it is (the user started to speak over it: it may be a barge-in, or only a cough); ``resume`` plays
on from there (it was not). A barge-in then cuts it as usual, and the user has heard only what played before
the pause."""


class ModelError(RuntimeError):
    """A model backend could not open a session or take a step."""


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How to open a model session: tokens decoded per tick, sampling, and backend-specific options."""

    outputs_per_tick: int = 8
    temperature: float = 0.0
    seed: int = 0
    options: dict[str, Any] = {}


class StepInput(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the model hears in one tick."""

    chunk: InputChunk
    dialog: DialogState | None = None
    """The latest dialog state (None until the first one is published)."""
    background: list[BackgroundUpdate] = []
    tool_results: list[ToolResult] = []
    heard: list[Heard] = []
    speaking: bool = False
    """Whether the assistant's current utterance is still being played out."""


class ToolRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A tool the model wants called."""

    name: str
    args: dict[str, Any] = {}


class StepOutput(msgspec.Struct, frozen=True, kw_only=True):
    """What the model emits for the next window: words to speak, optional audio, control tokens, and any
    delegation or tool request."""

    text: str = ""
    audio: bytes = b""
    controls: list[str] = []
    delegate: str | None = None
    """A goal to hand to the background reasoner."""
    tool_call: ToolRequest | None = None


@runtime_checkable
class ModelSession(Protocol):
    """One conversation's model state (e.g. its KV cache)."""

    blocking: bool
    """True when the session computes on the calling thread (torch, rules): it then also has
    ``step_sync``, which the interaction actor runs in a worker thread in realtime mode and inline in
    lockstep. False when ``step`` awaits I/O (an HTTP model server)."""

    async def step(self, step_input: StepInput) -> StepOutput:
        """Append one tick's input and decode that tick's output."""
        ...

    async def close(self) -> None:
        """Release the session's resources."""
        ...


class BlockingModelSession:
    """Base for sessions that compute on the calling thread: implement ``step_sync``."""

    blocking = True

    def step_sync(self, step_input: StepInput) -> StepOutput:
        """Append one tick's input and decode that tick's output, on the calling thread."""
        raise NotImplementedError

    async def step(self, step_input: StepInput) -> StepOutput:
        """Run :meth:`step_sync` inline."""
        return self.step_sync(step_input)

    async def close(self) -> None:
        """Nothing to release by default."""


@runtime_checkable
class ModelBackend(Protocol):
    """A way to run the interaction model."""

    name: str

    async def open_session(self, spec: ModelSpec) -> ModelSession:
        """Open a fresh session."""
        ...
