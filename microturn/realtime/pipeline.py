"""The real session handler: one microturn pipeline per Realtime connection, in realtime clock mode.

Client side in: 16 kHz audio (already resampled by the transport) becomes ``UserAudio``; a
``conversation.item.create`` with text content becomes ``UserText``; ``response.cancel`` interrupts the current
generation. Server events out, from the pipeline's own messages (a bridge actor at the end of the pipeline):

* ``DialogState`` user floor entering / leaving speech -> ``input_audio_buffer.speech_started`` / ``stopped``;
* ``SpeechStarted`` -> ``response.created``; each ``Playout`` window -> ``response.output_audio.delta`` (24 kHz)
  and ``response.output_audio_transcript.delta`` (its words);
* ``SpeechEnded`` -> ``response.done``, status ``completed``, or ``cancelled`` after a barge-in or a cancel.

``conversation.item.truncate`` is acknowledged (``conversation.item.truncated``) but does not rewrite the
pipeline's Heard ledger: the mixer already records exactly the words it played before a cut.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import trio

from microturn.assembly import PipelineSpec, build_pipeline
from microturn.audio.pcm import float_to_pcm16, pcm16_to_float
from microturn.log import get_logger
from microturn.messages import DialogState, Interrupt, Playout, SpeechEnded, SpeechStarted, UserAudio, UserText
from microturn.realtime.protocol import OutputAudio, new_event_id
from microturn.runtime import Actor, open_session

try:  # optional: the realtime extra
    from openai.types.realtime import (
        ConversationItemTruncatedEvent,
        InputAudioBufferSpeechStartedEvent,
        InputAudioBufferSpeechStoppedEvent,
        RealtimeResponse,
        ResponseAudioTranscriptDeltaEvent,
        ResponseCreatedEvent,
        ResponseDoneEvent,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("microturn.realtime needs the realtime extra: pip install 'microturn[realtime]'") from exc

__all__ = ["PipelineHandler", "pipeline_factory"]

log = get_logger(__name__)

_SPEAKING = frozenset({"speaking", "interrupting"})
# Events queued for the socket at most; past it the bridge waits (the socket is the slow side, not the pipeline).
_QUEUE = 1024


class _Bridge(Actor):
    """Turns the pipeline's messages into Realtime server events, queued for the socket in order."""

    subscriptions = (DialogState, SpeechStarted, Playout, SpeechEnded, Interrupt)

    def __init__(self, out: trio.MemorySendChannel[Any], tick_period: float) -> None:
        super().__init__("realtime_bridge")
        self.out = out
        self.tick_period = tick_period
        self.user_speaking = False
        self.item_id = ""
        self.responses: dict[int, tuple[str, str, int]] = {}
        """Open utterances: id -> (response id, item id, generation)."""
        self.cancelled: set[int] = set()
        """Generations interrupted (barge-in or response.cancel): their responses end ``cancelled``."""
        self.audio = OutputAudio()

    @property
    def generation(self) -> int | None:
        """The newest generation speaking now, if any."""
        return max((g for _, _, g in self.responses.values()), default=None)

    def _ms(self) -> int:
        return round(self.session.clock.tick * self.tick_period * 1000)

    async def handle(self, message: object) -> None:
        """One pipeline message -> zero or more server events."""
        match message:
            case DialogState(user=user):
                speaking = user in _SPEAKING
                if speaking and not self.user_speaking:
                    self.item_id = f"item_{new_event_id()[4:]}"
                    await self.out.send(InputAudioBufferSpeechStartedEvent(
                        type="input_audio_buffer.speech_started", event_id=new_event_id(),
                        audio_start_ms=self._ms(), item_id=self.item_id))
                elif not speaking and self.user_speaking:
                    await self.out.send(InputAudioBufferSpeechStoppedEvent(
                        type="input_audio_buffer.speech_stopped", event_id=new_event_id(),
                        audio_end_ms=self._ms(), item_id=self.item_id))
                self.user_speaking = speaking
            case SpeechStarted(utterance_id=u, generation=g):
                rid, iid = f"resp_{new_event_id()[4:]}", f"item_{new_event_id()[4:]}"
                self.responses[u] = (rid, iid, g)
                await self.out.send(ResponseCreatedEvent(
                    type="response.created", event_id=new_event_id(),
                    response=RealtimeResponse(id=rid, object="realtime.response", status="in_progress")))
            case Playout(utterance_id=u, text=text, pcm=pcm) if u in self.responses:
                rid, iid, _ = self.responses[u]
                if pcm:
                    delta = self.audio.delta(pcm16_to_float(pcm), response_id=rid, item_id=iid)
                    if delta is not None:
                        await self.out.send(delta)
                if text:
                    await self.out.send(ResponseAudioTranscriptDeltaEvent(
                        type="response.output_audio_transcript.delta", event_id=new_event_id(), response_id=rid,
                        item_id=iid, output_index=0, content_index=0, delta=text + " "))
            case SpeechEnded(utterance_id=u, generation=g, reason=reason) if u in self.responses:
                rid, iid, _ = self.responses.pop(u)
                last = self.audio.finish(response_id=rid, item_id=iid)
                if last is not None:
                    await self.out.send(last)
                cancelled = reason == "interrupted" or g in self.cancelled
                await self.out.send(ResponseDoneEvent(
                    type="response.done", event_id=new_event_id(),
                    response=RealtimeResponse(id=rid, object="realtime.response",
                                              status="cancelled" if cancelled else "completed")))
            case Interrupt(generation=g):
                self.cancelled.add(g)
                if len(self.cancelled) > 256:  # bounded: only recent generations can still end
                    self.cancelled.discard(min(self.cancelled))


class PipelineHandler:
    """A :class:`~microturn.realtime.server.SessionHandler` running one microturn pipeline for its connection."""

    def __init__(self, spec: PipelineSpec | None = None, *, tick_period: float = 0.2) -> None:
        self.spec = spec or PipelineSpec(render_audio=True)
        self.tick_period = tick_period
        self._session: Any = None
        self._bridge: _Bridge | None = None
        self._ready = trio.Event()

    async def run(self, send: Callable[[Any], Any], *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pipeline until cancelled (the connection's end), sending its events through ``send``."""
        out, events = trio.open_memory_channel[Any](_QUEUE)
        self._bridge = bridge = _Bridge(out, self.tick_period)
        actors = build_pipeline(self.spec, extra=[bridge], tick_period=self.tick_period)
        async with open_session(actors, mode="realtime", tick_period=self.tick_period,
                                session_id="realtime") as session:
            self._session = session
            self._ready.set()
            task_status.started()
            async for event in events:
                await send(event)

    async def audio(self, samples: np.ndarray, send: Any) -> None:
        """The user's next 16 kHz samples, as one ``UserAudio``."""
        await self._ready.wait()
        await self._session.publish(UserAudio(pcm=float_to_pcm16(samples)), source="realtime")

    async def event(self, event: Any, send: Any) -> None:
        """Typed text, cancel and truncate; other events are accepted and ignored."""
        await self._ready.wait()
        if event.type == "conversation.item.create":
            content = getattr(event.item, "content", None) or []
            text = " ".join(t for t in (getattr(c, "text", None) for c in content) if t).strip()
            if text:
                await self._session.publish(UserText(text=text[:4096]), source="realtime")
        elif event.type == "response.cancel":
            generation = self._bridge.generation if self._bridge else None
            if generation is not None:
                await self._session.publish(Interrupt(generation=generation, reason="response.cancel"),
                                            source="realtime")
        elif event.type == "conversation.item.truncate":
            await send(ConversationItemTruncatedEvent(
                type="conversation.item.truncated", event_id=new_event_id(), item_id=event.item_id,
                content_index=event.content_index, audio_end_ms=event.audio_end_ms))

    async def close(self) -> None:
        """Nothing held beyond the run task, which the transport cancels."""


def pipeline_factory(spec: PipelineSpec | None = None, *, tick_period: float = 0.2) -> Callable[[], PipelineHandler]:
    """A factory for :func:`~microturn.realtime.server.make_app`: a fresh pipeline per connection."""
    spec = spec or PipelineSpec(render_audio=True)
    build_pipeline(spec, tick_period=tick_period)  # fail at start-up on a bad spec or model, not per connection
    return lambda: PipelineHandler(spec, tick_period=tick_period)
