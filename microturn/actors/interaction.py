"""The interaction actor: runs the interaction model once per tick and manages the assistant's utterances.

Protocol (who publishes what, when):

- **Per tick.** Each ``InputChunk(tick=k)`` is handed to the model session together with everything that arrived
  since the last step: the latest ``DialogState``, ``BackgroundUpdate`` s, ``ToolResult`` s and ``Heard``
  entries (all input streams), and ``speaking`` (an utterance of ours is not yet fully heard). The step's output
  is published as ``OutputChunk(tick=k+1, generation=g, ...)`` — one per step, silent ones included.
- **Utterances.** The first text after silence opens utterance ``u`` (ids count from 1) in a new generation
  ``g`` (generations advance with every utterance and every cut, so each utterance has its own):
  ``SpeechStarted(u, g)`` goes out just before the ``OutputChunk`` carrying its first words. ``end_utterance``
  closes the model's side of it; the utterance ends when the output mixer reports it fully played
  (``Heard(u, truncated=False)`` -> ``SpeechEnded(u, completed)``), so "speaking" means audible, not decoded.
- **Barge-in.** When ``DialogState.user`` becomes ``interrupting`` while an utterance holds the floor (a lone
  backchannel does not), when a final ``BackgroundUpdate`` with delivery ``interrupt`` arrives while speaking,
  or when the model goes silent in the middle of an utterance, the actor publishes ``Interrupt(generation=g)``
  (control lane: the mixer drops unplayed words at once and reports the truncated ``Heard``) and
  ``SpeechEnded(u, interrupted)`` for every open utterance, and moves to generation ``g+1``: any output of
  an older generation still in flight is discarded. An ``Interrupt`` published by someone else (a transport's
  stop button, a scenario) ends the open utterances the same way.
- **Holding.** ``pause`` / ``resume`` in the model's controls travel in the ``OutputChunk`` to the output mixer,
  which holds the utterance in place and plays on from there: the model goes quiet at the user's first sound
  and decides later whether it was a barge-in (the dialog state says so, and the actor cuts as above) or not.
  A held utterance is still open: ``speaking`` stays true and no ``SpeechEnded`` goes out.
- **Delegation and tools.** ``StepOutput.delegate`` -> ``Delegate(task_id="task-{n}", goal, context)`` with a
  :class:`ContextPackage` (recent transcript, what the user heard, the dialog state, the tool names);
  ``StepOutput.tool_call`` -> ``ToolCall(call_id="{name}-{n}", name, args)``; both carry the generation.

- **References.** The model's text may point at a tool result or a background result it was fed instead of
  spelling it (:mod:`microturn.model.references`); the actor renders those words verbatim before publishing, and
  one that does not resolve renders as nothing (logged as ``reference_unresolved``), never as a guess. A
  delegated goal may be the user's words by reference (``\\x01L{n}``); one that does not resolve delegates nothing.

Modes: in **lockstep** the step runs as owned work that starts once the session has settled after the chunk,
and holds the session clock while it steps, so outcomes never depend on machine speed; by then the
``DialogState`` derived from chunk k has arrived, so the step for chunk k sees it (no tick of lag between
what the user did and what the model knows). In **realtime** the step runs as owned work, in a
worker thread for ``blocking`` sessions, so a step that overruns the tick never blocks the loop; chunks that
arrive meanwhile are coalesced (texts joined, media concatenated, the latest speech probability kept) into
the next step, and there is never more than one step in flight. That task is not tagged with a generation:
an Interrupt must not lose input chunks (the model has to hear them); its stale output is discarded instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import trio

from microturn.messages import (
    BackgroundUpdate,
    ContextPackage,
    Delegate,
    DialogState,
    Heard,
    InputChunk,
    Interrupt,
    OutputChunk,
    SpeechEnded,
    SpeechStarted,
    ToolCall,
    ToolResult,
    TranscriptLine,
)
from microturn.model.protocol import ModelBackend, ModelSession, ModelSpec, StepInput, StepOutput
from microturn.model.references import ReferenceBook
from microturn.model.scripted import ScriptedPolicy
from microturn.runtime import Actor

__all__ = ["InteractionActor", "coalesce_chunks"]


def coalesce_chunks(chunks: Sequence[InputChunk]) -> InputChunk:
    """Merge input chunks that arrived while a step was in flight into one, stamped with the latest tick."""
    if len(chunks) == 1:
        return chunks[0]
    last = chunks[-1]
    return InputChunk(
        tick=last.tick,
        dmel=b"".join(c.dmel for c in chunks),
        n_frames=sum(c.n_frames for c in chunks),
        text=" ".join(c.text for c in chunks if c.text),
        patches=b"".join(c.patches for c in chunks),
        n_patches=sum(c.n_patches for c in chunks),
        image_grids=[grid for c in chunks for grid in c.image_grids],
        speech_prob=last.speech_prob,
    )


class InteractionActor(Actor):
    """Steps the interaction model every tick; publishes its output, utterance events, delegations and tool calls.

    ``backend`` defaults to :class:`microturn.model.scripted.ScriptedPolicy`; ``tools`` are the tool names put
    into delegated context packages; ``transcript_lines`` bounds the transcript kept for them."""

    subscriptions = (InputChunk, DialogState, BackgroundUpdate, ToolResult, Heard, Interrupt)

    def __init__(
        self,
        backend: ModelBackend | None = None,
        spec: ModelSpec | None = None,
        *,
        tools: Sequence[str] = (),
        transcript_lines: int = 50,
        name: str = "interaction",
    ) -> None:
        super().__init__(name)
        self.backend = backend if backend is not None else ScriptedPolicy()
        self.spec = spec or ModelSpec()
        self.tools = list(tools)
        self.model: ModelSession | None = None
        self.steps = 0
        """Model steps taken."""
        self.coalesced = 0
        """Input chunks merged into a later step (realtime overruns)."""
        self.stale = 0
        """Step outputs discarded because a barge-in happened while they were computed."""
        # Conversation state outlives a restart: generations and utterance ids must keep increasing, or the
        # mixer would take new output for stale output.
        self.generation = 0
        self.dialog: DialogState | None = None
        self.background: list[BackgroundUpdate] = []
        self.tool_results: list[ToolResult] = []
        self.heard: list[Heard] = []
        self.open: dict[int, int] = {}  # utterance id -> generation, for utterances not yet ended
        self.backchannels: set[int] = set()
        self.current: int | None = None  # the utterance the model is still emitting words for
        self.last_utterance = 0
        self.counters = {"task": 0, "call": 0}
        self.transcript: deque[TranscriptLine] = deque(maxlen=transcript_lines)
        self.heard_texts: deque[str] = deque(maxlen=transcript_lines)
        self.references = ReferenceBook()
        """The tool and background results fed to the model, so its reference words render verbatim."""

    async def on_start(self) -> None:
        """Open the model session. After a restart: a fresh session, and the utterances of the failed run end
        as interrupted (the new session knows nothing of them)."""
        restarted = self.model is not None
        if self.model is not None:
            await self.model.close()
        self.model = await self.backend.open_session(self.spec)
        self.realtime = self.session.clock.mode == "realtime"
        self.pending: list[InputChunk] = []
        self.stepping = False
        self.stopping = False
        if restarted:
            await self._cut("actor_restarted")

    async def on_stop(self) -> None:
        """Release the model session (after the step in flight, if any: never close under a running step)."""
        self.pending.clear()
        self.stopping = True
        if not self.stepping:
            await self._close_model()

    async def _close_model(self) -> None:
        model, self.model = self.model, None
        if model is not None:
            with trio.CancelScope(shield=True):  # also runs while the session's tasks are being cancelled
                await model.close()

    async def handle(self, message: object) -> None:
        """Step on input chunks; buffer the other input streams; cut the current utterance on a barge-in."""
        match message:
            case InputChunk():
                self.pending.append(message)
                if not self.stepping:
                    self.stepping = True
                    self.spawn(self._step_loop, name=f"{self.name}:step")
            case DialogState(user=user):
                self.dialog = message
                if user == "interrupting" and any(u not in self.backchannels for u in self.open):
                    await self._cut("user_interrupting")
            case BackgroundUpdate(status=status, delivery=delivery, text=text):
                self.background.append(message)
                if status == "final" and text:
                    self._note("background", text)
                if status == "final" and delivery == "interrupt":
                    await self._cut("background_interrupt")
            case ToolResult(call_id=call_id, ok=ok, value=value, error=error):
                self.tool_results.append(message)
                self._note("tool", f"{call_id}: {value if ok else error}")
            case Heard():
                await self._on_heard(message)
            case Interrupt(generation=generation) if generation >= self.generation:
                # Someone else interrupted us (our own Interrupts are always older than our generation).
                await self._cut(message.reason or "external_interrupt", publish=False, past=generation)

    # --- stepping -------------------------------------------------------------------------------------------

    async def _step_loop(self) -> None:
        """Run steps one at a time, coalescing the chunks that queued while one was in flight (realtime).

        In lockstep this owned work starts once the session has settled after the chunk (see ``spawn``), so
        the step sees the dialog state derived from this very chunk; it holds the clock while it steps, so no
        session time passes while a model answers (a thread, an HTTP server)."""
        clock = None if self.realtime else self.session.clock
        try:
            while self.pending:
                chunks, self.pending = self.pending, []
                self.coalesced += len(chunks) - 1
                if clock is not None:
                    clock.hold()
                try:
                    await self._step(chunks)
                finally:
                    if clock is not None:
                        clock.release()
        finally:
            self.stepping = False
            if self.stopping:
                await self._close_model()

    async def _step(self, chunks: list[InputChunk]) -> None:
        chunk = coalesce_chunks(chunks)
        if chunk.text:
            self._note("user", chunk.text)
        step_input = StepInput(
            chunk=chunk,
            dialog=self.dialog,
            background=self.background,
            tool_results=self.tool_results,
            heard=self.heard,
            speaking=bool(self.open),
        )
        self.background, self.tool_results, self.heard = [], [], []
        # Numbered in the order the model sees them, so "the n-th result" means the same on both sides.
        self.references.add_user(chunk.text)
        for update in step_input.background:
            self.references.add_background(update.status, update.text)
        for result in step_input.tool_results:
            self.references.add_tool(result.ok, result.value)
        generation = self.generation
        model = self.model
        if model is None or self.stopping:
            return
        started = self.now()
        if self.realtime and getattr(model, "blocking", False):
            output = await trio.to_thread.run_sync(model.step_sync, step_input)  # type: ignore[attr-defined]
        else:
            output = await model.step(step_input)
        self.steps += 1
        elapsed = self.now() - started
        if elapsed > self.session.clock.period:
            self.log.warning("step_overran", tick=chunk.tick, seconds=round(elapsed, 4), coalesced=len(chunks))
        if generation != self.generation:
            self.stale += 1
            self.log.info("stale_step_discarded", tick=chunk.tick, generation=generation)
            return
        await self._apply(output, chunk.tick)

    async def _apply(self, out: StepOutput, tick: int) -> None:
        text, missing = self.references.resolve(out.text.strip())
        if missing:
            self.log.warning("reference_unresolved", tick=tick, references=missing)
        controls = list(out.controls)
        if self.current is not None and not text and "silence" in controls:
            await self._cut("model_stopped")  # the model abandoned its utterance half-way
        # State changes come before each publish: in realtime a handler (a barge-in) may run at any await.
        started = None
        if text and self.current is None:
            self.generation += 1  # one generation per utterance: "cancel generation <= g" is then exact
            self.last_utterance += 1
            self.current = started = self.last_utterance
            self.open[started] = self.generation
            if "backchannel" in controls:
                self.backchannels.add(started)
        g = self.generation
        if started is not None:
            await self.publish(SpeechStarted(utterance_id=started, generation=g))
        await self.publish(OutputChunk(tick=tick + 1, generation=g, text=text, audio=out.audio, controls=controls))
        if "end_utterance" in controls:
            self.current = None
        goal = out.delegate
        if goal:
            goal, missing = self.references.resolve(goal)
            if missing or not goal:  # a goal that does not resolve is not guessed: nothing is delegated
                self.log.warning("delegate_goal_unresolved", tick=tick, references=missing, goal=out.delegate)
                goal = None
        if goal:
            self.counters["task"] += 1
            task_id = f"task-{self.counters['task']}"
            await self.publish(Delegate(task_id=task_id, goal=goal, context=self._context(), generation=g))
        if out.tool_call is not None:
            self.counters["call"] += 1
            call_id = f"{out.tool_call.name}-{self.counters['call']}"
            call = ToolCall(call_id=call_id, name=out.tool_call.name, args=dict(out.tool_call.args), generation=g)
            await self.publish(call)

    # --- utterances -----------------------------------------------------------------------------------------

    async def _cut(self, reason: str, *, publish: bool = True, past: int | None = None) -> None:
        """End every open utterance as interrupted and move to a new generation."""
        if not self.open and past is None:
            return
        cut = sorted(self.open.items())
        self.open.clear()
        self.backchannels.clear()
        self.current = None
        old = self.generation
        self.generation = (old if past is None else max(old, past)) + 1
        self.log.info("utterance_cut", reason=reason, generation=old, utterances=[u for u, _ in cut])
        if publish:
            await self.publish(Interrupt(generation=old, reason=reason))
        for utterance_id, generation in cut:
            await self.publish(SpeechEnded(utterance_id=utterance_id, generation=generation, reason="interrupted"))

    async def _on_heard(self, heard: Heard) -> None:
        self.heard.append(heard)
        if heard.text_heard:
            self.heard_texts.append(heard.text_heard)
            self._note("assistant", heard.text_heard)
        generation = self.open.pop(heard.utterance_id, None)
        if generation is None:
            return  # already ended (interrupted): the Heard still reaches the model as the truth
        self.backchannels.discard(heard.utterance_id)
        if self.current == heard.utterance_id:
            self.current = None
        reason = "interrupted" if heard.truncated else "completed"
        await self.publish(SpeechEnded(utterance_id=heard.utterance_id, generation=generation, reason=reason))

    # --- context --------------------------------------------------------------------------------------------

    def _note(self, speaker: str, text: str) -> None:
        """Append to the transcript, merging consecutive lines of one speaker."""
        last = self.transcript[-1] if self.transcript else None
        if last is not None and last.speaker == speaker and speaker in ("user", "assistant"):
            self.transcript[-1] = TranscriptLine(speaker=last.speaker, text=f"{last.text} {text}", tick=last.tick)
        else:
            self.transcript.append(TranscriptLine(speaker=speaker, text=text, tick=self.tick))  # type: ignore[arg-type]

    def _context(self) -> ContextPackage:
        dialog = self.dialog
        state = f"floor={dialog.floor} user={dialog.user} assistant={dialog.assistant}" if dialog else ""
        return ContextPackage(
            transcript=list(self.transcript), heard=list(self.heard_texts), dialog_state=state, tools=self.tools
        )
