"""Test doubles shared by the actor tests (named as such: they stand in for the real perception and dialog
state so a test can script exactly what the interaction model hears)."""

from __future__ import annotations

from microturn.messages import DialogState, InputChunk, Tick
from microturn.runtime import Actor


class PerceptionDouble(Actor):
    """Test double of perception: InputChunk(tick=k) with the scripted text for tick k."""

    subscriptions = (Tick,)

    def __init__(self, texts: dict[int, str]) -> None:
        super().__init__("perception")
        self.texts = texts

    async def handle(self, message: object) -> None:
        if isinstance(message, Tick):
            text = self.texts.get(message.tick, "")
            await self.publish(InputChunk(tick=message.tick, text=text, speech_prob=1.0 if text else 0.0))


class DialogDouble(Actor):
    """Test double of dialog state: the user yields right after each line of text."""

    subscriptions = (InputChunk,)

    async def handle(self, message: object) -> None:
        if isinstance(message, InputChunk) and message.text:
            await self.publish(DialogState(floor="user", user="inviting", assistant="silent"))
