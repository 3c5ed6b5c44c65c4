"""The sglang backend: the interaction model in an sglang server with streaming sessions, over httpx on trio.

One model session = one sglang streaming session (``/open_session`` with ``"streaming": true``); each tick is
one ``/generate`` that appends that tick's input and decodes K outputs (``session_params {id, rid}``,
``sampling_params`` as in docs/design.md §7); the server appends the previous turn's output itself, so outputs are
never resent. ``/close_session`` when the session ends. Works against sglang ≥ 0.5.10 started with
``--enable-streaming-session`` and against ``microturn serve`` (the same protocol over the local torch model).

Rules this client keeps:

* **One request in flight per session.** In **realtime** mode a tick whose reply has not come by its deadline
  (``deadline`` seconds after the step began) yields silence; the request stays in flight, and the inputs of
  the ticks that pass meanwhile are merged into the next request (never a second one in flight). A reply that
  comes late is delivered with the next step's output. In **lockstep** mode (auto-detected: trio's
  ``MockClock``) every step waits for its reply, so outcomes never depend on machine speed.
* **A failed turn** (``finish_reason.type == "abort"``, a 5xx, a transport error) was rolled back by the
  server: that step yields silence and its input is resent, merged with the next one. The client's encoder is
  put back to where it was before that turn, so nothing is lost or doubled.
* **Connection errors** (the request never reached the server) are retried with exponential backoff within the
  tick budget (realtime) or ``retries`` times (lockstep).
* **HTTP 400** (``{"error": {"message": ...}}``) is a protocol error: :class:`SglangError` (a ModelError)
  naming the endpoint and the server's message.
* **A server that lost the session** (it restarted, or reaped the session) answers a turn with "no open
  session": the client opens a new session, logs ``sglang_session_reopened``, and resends the whole context
  it built so far (every turn's input and the outputs the server gave, which is exactly the sequence the old
  session held) in front of the turn, which then completes as if nothing happened (bit for bit at temperature
  0; sampled turns restart their generator from the seed). The context kept for that is bounded
  (:data:`MAX_RESEND` positions); a session past it, or a server that will not open a new session, ends with
  :class:`ModelServerLost`, which says the model server went away. A text-mode session resends its text
  (re-tokenized by the server: close, not necessarily bit for bit).

Two input modes:

* ``"native"`` (microturn models: ``microturn serve``, or an sglang model with the microturn layout): the
  client owns the :class:`~microturn.model.layout.TickEncoder` and the
  :class:`~microturn.model.layout.OutputDecoder`; ``input_ids`` are the encoder's chunk and the ``media``
  field carries the dMel frames and patches of its DMEL/PATCH positions (base64; see
  :mod:`microturn.model.sglang_wire`). K comes from the server's ``/get_model_info`` (``outputs_per_tick``)
  when it says, else from ``ModelSpec.outputs_per_tick``.
* ``"text"`` (any text-only instruct model served by sglang): :class:`TextBridge` renders the tick (the
  transcript text, dialog state and control markers) as text, sent as ``/generate``'s ``text`` field, which
  sglang tokenizes with the model's own tokenizer (and strips a leading BOS on appended turns); the output text
  is parsed back into words and controls.

Use :func:`open_sglang_backend` (it holds the HTTP client and the nursery that in-flight requests run in);
``SglangBackend(url)`` on its own (the scenario runner's ``--model sglang:URL``) makes its own client and, with
no nursery, waits for every reply (lockstep behaviour) even in realtime.
"""

from __future__ import annotations

import base64
import contextlib
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import msgspec
import trio
import trio.testing

from microturn.log import get_logger
from microturn.messages import InputChunk

from .config import ModelConfig
from .layout import OutputDecoder, TickEncoder
from .protocol import ModelError, ModelSpec, StepInput, StepOutput, ToolRequest
from .sglang_wire import (
    ErrorBody,
    GenerateRequest,
    GenerateResponse,
    Media,
    OpenSessionRequest,
    SamplingParams,
    SessionParams,
)

__all__ = [
    "MAX_RESEND",
    "ModelServerLost",
    "SglangBackend",
    "SglangError",
    "SglangSession",
    "TextBridge",
    "merge_inputs",
    "merge_outputs",
    "open_sglang_backend",
]

Mode = Literal["native", "text"]

log = get_logger("microturn.model.sglang")


class SglangError(ModelError):
    """The server refused a request (HTTP 4xx) or could not be reached; the message names the endpoint and
    the server's own words."""


class ModelServerLost(SglangError):
    """The model server went away: it lost the session (restarted) and the session could not be rebuilt on a
    new one, or it could not be reached for ``max_failures`` turns in a row. ``fatal``: the runtime ends the
    session with this as its cause, without restarting the actor or logging a traceback."""

    fatal = True


class _SessionLost(SglangError):
    """A /generate answered that the server has no such session (it restarted, or reaped it)."""


MAX_RESEND = 60000
"""The most positions a session keeps to resend when its server lost it (microturn serve accepts 65536 in one
turn); past that it can no longer be rebuilt, and losing it ends it with :class:`ModelServerLost`."""

_LOST = re.compile(r"no open session|session[ _]?(id)?\b.{0,80}\b(does not exist|not found|unknown)|"
                   r"invalid session", re.IGNORECASE)


# --- merging ---------------------------------------------------------------------------------------------------


def _merge_chunks(a: InputChunk, b: InputChunk) -> InputChunk:
    return InputChunk(
        tick=b.tick,
        dmel=a.dmel + b.dmel,
        n_frames=a.n_frames + b.n_frames,
        text=" ".join(t for t in (a.text, b.text) if t),
        patches=a.patches + b.patches,
        n_patches=a.n_patches + b.n_patches,
        image_grids=[*a.image_grids, *b.image_grids],
        speech_prob=b.speech_prob,
    )


def merge_inputs(first: StepInput | None, then: StepInput) -> StepInput:
    """Two ticks' inputs as one (``first`` came earlier): media and text concatenated, the lists joined, the
    latest dialog state, speech probability and ``speaking`` kept."""
    if first is None:
        return then
    return StepInput(
        chunk=_merge_chunks(first.chunk, then.chunk),
        dialog=then.dialog if then.dialog is not None else first.dialog,
        background=[*first.background, *then.background],
        tool_results=[*first.tool_results, *then.tool_results],
        heard=[*first.heard, *then.heard],
        speaking=then.speaking,
    )


def merge_outputs(outputs: Sequence[StepOutput]) -> StepOutput:
    """Several steps' outputs as one (late replies delivered together): words joined, controls in order without
    repeats, the first delegation and tool call (a second one is logged and dropped)."""
    if not outputs:
        return StepOutput()
    if len(outputs) == 1:
        return outputs[0]
    controls: list[str] = []
    for out in outputs:
        controls += [c for c in out.controls if c not in controls]
    delegates = [o.delegate for o in outputs if o.delegate]
    calls = [o.tool_call for o in outputs if o.tool_call is not None]
    if len(delegates) > 1 or len(calls) > 1:
        log.warning("late_outputs_dropped", delegates=len(delegates) - 1 if delegates else 0,
                    tool_calls=len(calls) - 1 if calls else 0)
    return StepOutput(
        text=" ".join(o.text for o in outputs if o.text),
        audio=b"".join(o.audio for o in outputs),
        controls=controls,
        delegate=delegates[0] if delegates else None,
        tool_call=calls[0] if calls else None,
    )


# --- the text bridge -------------------------------------------------------------------------------------------

_MARKERS = {
    "silence": "silence", "speak": "speak", "backchannel": "backchannel", "end": "end_utterance",
}
_PAIRED = {"delegate": "delegate", "tool": "tool_call"}

PREAMBLE = (
    "You are the voice of a real-time assistant in a full-duplex conversation cut into 200 ms ticks. Each tick "
    "shows [tick N: floor, user state, assistant state], what the user said, and what the user actually heard of "
    "you. Answer with at most a few words per tick, or nothing while the user holds the floor. Control markers: "
    "<speak> start speaking, <end> end your utterance, <silence> stop, <backchannel> a short acknowledgement, "
    "<delegate>goal</delegate> hand a long task to the background reasoner, "
    '<tool>{"name": ..., "args": {...}}</tool> call a tool.\n'
)
"""What the text bridge sends before the first tick (its ``preamble``)."""


@dataclass
class TextBridge:
    """Renders each tick's :class:`StepInput` as text and parses the model's text back (stateful: a word or a
    marker split across ticks waits for its end).

    A tick renders as ``\\n[tick K: floor=… user=… assistant=… speaking=… vad=N]`` then one line per input
    (``user: …``, ``heard: …`` / ``heard (cut off): …``, ``background <status>: …``, ``tool ok|failed: …``,
    ``[image RxC]``, ``[audio N frames]``) and ``assistant:``. Output markers: ``<speak>``, ``<end>``
    (end_utterance), ``<silence>``, ``<backchannel>``, ``<delegate>goal</delegate>``,
    ``<tool>{"name", "args"}</tool>``; everything else is words."""

    preamble: str = PREAMBLE
    started: bool = False
    buffer: str = ""
    malformed: int = 0

    def render(self, step_input: StepInput) -> str:
        """The text of one tick (the preamble first, once)."""
        chunk, dialog = step_input.chunk, step_input.dialog
        head = (f"\n[tick {chunk.tick}: floor={dialog.floor if dialog else 'none'} "
                f"user={dialog.user if dialog else 'none'} assistant={dialog.assistant if dialog else 'none'} "
                f"speaking={'yes' if step_input.speaking else 'no'} vad={min(3, max(0, int(chunk.speech_prob * 4)))}]\n")
        lines = [head]
        if chunk.n_frames:
            lines.append(f"[audio {chunk.n_frames} frames]\n")
        for rows, cols in chunk.image_grids:
            lines.append(f"[image {rows}x{cols}]\n")
        if chunk.text:
            lines.append(f"user: {chunk.text}\n")
        for heard in step_input.heard:
            lines.append(f"heard{' (cut off)' if heard.truncated else ''}: {heard.text_heard}\n")
        for update in step_input.background:
            lines.append(f"background {update.status}: {update.text}\n")
        for result in step_input.tool_results:
            body = msgspec.json.encode(result.value).decode() if result.ok else str(result.error or "error")
            lines.append(f"tool {'ok' if result.ok else 'failed'}: {body}\n")
        lines.append("assistant:")
        text = "".join(lines)
        if not self.started:
            self.started = True
            text = self.preamble + text
        return text

    def parse(self, text: str) -> StepOutput:
        """One tick's output text to a StepOutput: complete words and markers; a partial one waits."""
        buf = self.buffer + text
        words: list[str] = []
        controls: list[str] = []
        delegate: str | None = None
        tool_call: ToolRequest | None = None
        pos = 0
        word = ""
        while pos < len(buf):
            ch = buf[pos]
            if ch == "<":
                m = re.match(r"<(\w+)>", buf[pos:])
                if m is None:
                    if ">" not in buf[pos:] and len(buf) - pos < 12:
                        break  # a marker still arriving
                    word += ch
                    pos += 1
                    continue
                name = m.group(1)
                if name in _PAIRED:
                    close = buf.find(f"</{name}>", pos + m.end())
                    if close < 0:
                        break  # its payload is still arriving
                    payload = buf[pos + m.end():close]
                    pos = close + len(name) + 3
                    if name == "delegate" and payload.strip():
                        delegate = payload.strip()
                        controls.append("delegate")
                    elif name == "tool":
                        try:
                            obj = msgspec.json.decode(payload.strip())
                            tool_call = ToolRequest(name=str(obj["name"]), args=dict(obj.get("args") or {}))
                            controls.append("tool_call")
                        except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
                            self.malformed += 1
                    continue
                if name in _MARKERS:
                    if word:
                        words.append(word)
                        word = ""
                    control = _MARKERS[name]
                    if control not in controls:
                        controls.append(control)
                else:
                    word += m.group(0)
                pos += m.end()
                continue
            if ch.isspace():
                if word:
                    words.append(word)
                word = ""
            else:
                word += ch
            pos += 1
        self.buffer = word + buf[pos:]
        return StepOutput(text=" ".join(words), controls=controls, delegate=delegate, tool_call=tool_call)


# --- the session -----------------------------------------------------------------------------------------------


@dataclass
class _Turn:
    """One /generate in flight."""

    input: StepInput
    encoder_state: Any
    body: GenerateRequest
    started: float
    encoded: Any = None
    """The turn's own input: its :class:`~microturn.model.layout.EncodedTick` (native mode) or its text (text
    mode), kept to resend the context if the server loses the session."""
    done: trio.Event = field(default_factory=trio.Event)
    response: GenerateResponse | None = None
    failed: str | None = None
    """Why the turn failed (the server rolled it back): its input is resent."""
    fatal: BaseException | None = None
    unreachable: bool = False
    """The turn failed because the server could not be reached at all."""


@dataclass
class TurnStats:
    """One completed turn, as the client saw it."""

    tick: int
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    server_s: float | None


class SglangSession:
    """One conversation in an sglang streaming session (see the module docstring for the rules)."""

    blocking = False

    def __init__(self, backend: SglangBackend, session_id: str, spec: ModelSpec, k: int) -> None:
        self.backend = backend
        self.id = session_id
        self.spec = spec
        self.k = k
        self.mode = backend.mode
        self.realtime = backend.realtime if backend.realtime is not None else not _virtual_time()
        self.deadline = backend.deadline
        self.encoder = TickEncoder(backend.max_input_tokens)
        self.decoder = OutputDecoder()
        self.bridge = TextBridge(**({"preamble": backend.preamble} if backend.preamble is not None else {}))
        self.rid: str | None = None
        self.pending: StepInput | None = None
        self.inflight: _Turn | None = None
        self.ready: list[GenerateResponse] = []
        self.closed = False
        self.turns: list[TurnStats] = []
        self.late = 0
        """Steps that yielded silence because their reply had not come by the deadline."""
        self.failed = 0
        """Turns that failed (rolled back by the server) and were resent."""
        self.retries = 0
        """Connection attempts retried."""
        self.backoffs: list[float] = []
        """The backoff delays slept before retries, in order."""
        self._failures_in_a_row = 0
        self._unreachable_in_a_row = 0
        self.reopened = 0
        """Times the server lost this session and it was rebuilt on a new one."""
        self.context: list[tuple[Any, list[int], str]] | None = []
        """What the server's session holds, turn by turn: (the turn's encoded input or text, its output ids,
        its output text); None once longer than :data:`MAX_RESEND` (it can no longer be resent)."""
        self._context_positions = 0

    # --- stepping ------------------------------------------------------------------------------------------

    async def step(self, step_input: StepInput) -> StepOutput:
        """Send this tick's input (merged with any not yet sent) and return what has come back by the
        deadline (realtime) or the reply (lockstep); silence when nothing has."""
        if self.closed:
            raise ModelError(f"step on a closed sglang session {self.id!r}")
        self.pending = merge_inputs(self.pending, step_input)
        nursery = self.backend.nursery
        if not self.realtime or nursery is None:
            if self.inflight is not None:  # a realtime session now stepped without a nursery: finish it first
                await self.inflight.done.wait()
                self._collect()
            turn = self._start()
            await self._run(turn, math.inf)
            self._collect()
            return self._deliver()
        deadline = trio.current_time() + self.deadline
        with trio.move_on_at(deadline) as scope:
            if self.inflight is not None:
                await self.inflight.done.wait()
            self._collect()
            turn = self._start()
            nursery.start_soon(self._run, turn, deadline)
            await turn.done.wait()
            self._collect()
        if scope.cancelled_caught:
            self.late += 1
            log.info("sglang_step_late", session=self.id, tick=step_input.chunk.tick,
                     waiting_for="reply" if self.inflight is not None else "nothing")
        return self._deliver()

    def _start(self) -> _Turn:
        step_input, self.pending = self.pending, None
        assert step_input is not None and self.inflight is None
        sp = self.spec
        # A microturn model ends its tick at END (its EOS), and the layout needs that: native mode lets the
        # server stop there. A text model's EOS would end every tick's output early: text mode ignores it.
        sampling = SamplingParams(max_new_tokens=self.k, temperature=float(sp.temperature),
                                  ignore_eos=self.mode == "text", no_stop_trim=True, skip_special_tokens=False,
                                  sampling_seed=sp.seed if sp.temperature > 0 else None)
        rid = uuid.uuid4().hex
        params = SessionParams(id=self.id, rid=self.rid)
        state = None
        enc = None
        if self.mode == "native":
            state = self.encoder.state()
            enc = self.encoder.encode(step_input)
            media = None
            if enc.dmel or enc.patches:
                media = Media(dmel=base64.b64encode(b"".join(enc.dmel)).decode("ascii"),
                              patches=base64.b64encode(b"".join(enc.patches)).decode("ascii"))
            body = GenerateRequest(input_ids=enc.tokens, sampling_params=sampling, session_params=params, rid=rid,
                                   media=media)
        else:
            enc = self.bridge.render(step_input)  # text mode: the rendered text is what the context keeps
            body = GenerateRequest(text=enc, sampling_params=sampling, session_params=params, rid=rid)
        self.inflight = _Turn(step_input, state, body, time.perf_counter(), encoded=enc)
        return self.inflight

    async def _run(self, turn: _Turn, deadline: float) -> None:
        """POST the turn (retrying connection errors with backoff until ``deadline``); record how it ended.
        Never raises: the outcome is read by :meth:`_collect`."""
        try:
            try:
                turn.response = await self.backend._post_generate(self, turn.body, deadline)
            except _SessionLost as lost:
                turn.response = await self._rebuild(turn, deadline, lost)
            reason = turn.response.meta_info.finish_reason
            if reason is not None and reason.type == "abort":
                turn.failed = f"aborted: {reason.message or 'no message'}"
        except SglangError as exc:
            turn.fatal = exc
        except _TurnFailed as exc:
            turn.failed = str(exc)
            turn.unreachable = exc.unreachable
        except Exception as exc:  # noqa: BLE001 - anything else fails the session loudly
            turn.fatal = exc
        finally:
            turn.done.set()

    async def _rebuild(self, turn: _Turn, deadline: float, lost: _SessionLost) -> GenerateResponse:
        """The server lost this session: open a new one and send it the whole context in front of ``turn``'s
        input (the sequence the old session held), so the turn completes as if nothing happened."""
        if self.context is None:
            raise ModelServerLost(f"the model server at {self.backend.url} lost session {self.id!r} ({lost}); "
                                  f"its context (over {MAX_RESEND} positions) is too long to resend")
        old = self.id
        try:
            new = await self.backend._open_id()
        except SglangError as exc:
            raise ModelServerLost(f"the model server at {self.backend.url} lost session {old!r} ({lost}) and "
                                  f"refused a new one: {exc}") from None
        body = turn.body
        params = SessionParams(id=new, rid=None)
        if self.mode == "native":
            tokens: list[int] = []
            dmel: list[bytes] = []
            patches: list[bytes] = []
            for enc, out_ids, _ in [*self.context, (turn.encoded, [], "")]:
                tokens += enc.tokens + out_ids
                dmel += enc.dmel
                patches += enc.patches
            media = None
            if dmel or patches:
                media = Media(dmel=base64.b64encode(b"".join(dmel)).decode("ascii"),
                              patches=base64.b64encode(b"".join(patches)).decode("ascii"))
            resend = GenerateRequest(input_ids=tokens, sampling_params=body.sampling_params, session_params=params,
                                     rid=body.rid, media=media)
            positions = len(tokens)
        else:
            text = "".join(sent + out_text for sent, _, out_text in self.context) + (turn.encoded or "")
            resend = GenerateRequest(text=text, sampling_params=body.sampling_params, session_params=params,
                                     rid=body.rid)
            positions = len(text.encode("utf-8"))
        self.id = new
        self.rid = None
        self.reopened += 1
        log.warning("sglang_session_reopened", old_session=old, session=new, url=self.backend.url,
                    reason=str(lost), resent_turns=len(self.context), resent_positions=positions)
        turn.body = resend
        try:
            return await self.backend._post_generate(self, resend, deadline)
        except _SessionLost as again:
            raise ModelServerLost(f"the model server at {self.backend.url} lost session {old!r} and then the new "
                                  f"session {new!r} too ({again})") from None

    def _remember(self, turn: _Turn, response: GenerateResponse) -> None:
        """Keep what the server's session now holds (to rebuild it if the server loses it), within bounds."""
        if self.context is None:
            return
        sent: Any = turn.encoded  # the turn's own input, even when its body carried the whole context again
        size = (len(sent.tokens) if self.mode == "native" else len(sent.encode("utf-8"))) + len(response.output_ids)
        self._context_positions += size
        if self._context_positions > MAX_RESEND:
            self.context = None
            log.info("sglang_context_too_long_to_resend", session=self.id, positions=self._context_positions)
            return
        self.context.append((sent, list(response.output_ids), response.text))

    def _collect(self) -> None:
        turn = self.inflight
        if turn is None or not turn.done.is_set():
            return
        self.inflight = None
        if turn.fatal is not None:
            if isinstance(turn.fatal, ModelError):
                raise turn.fatal
            raise ModelError(f"sglang session {self.id!r}: {turn.fatal!r}") from turn.fatal
        if turn.failed is not None:
            # The server rolled the turn back: put the encoder back and resend that input with the next one.
            self.failed += 1
            self._failures_in_a_row += 1
            self._unreachable_in_a_row = self._unreachable_in_a_row + 1 if turn.unreachable else 0
            if turn.encoder_state is not None:
                self.encoder.load(turn.encoder_state)
            if self.mode == "text" and not self.turns:
                self.bridge.started = False  # the preamble went out with the failed turn: send it again
            self.pending = merge_inputs(turn.input, self.pending) if self.pending is not None else turn.input
            log.warning("sglang_turn_failed", session=self.id, reason=turn.failed, resend=True)
            if self._failures_in_a_row > self.backend.max_failures:
                if self._unreachable_in_a_row == self._failures_in_a_row:
                    raise ModelServerLost(f"the model server at {self.backend.url} went away: it could not be "
                                          f"reached for {self._failures_in_a_row} turns in a row "
                                          f"(last: {turn.failed})")
                raise SglangError(f"sglang session {self.id!r}: {self._failures_in_a_row} turns in a row failed "
                                  f"(last: {turn.failed})")
            return
        self._failures_in_a_row = 0
        self._unreachable_in_a_row = 0
        response = turn.response
        assert response is not None
        self._remember(turn, response)
        meta = response.meta_info
        self.rid = meta.id
        self.turns.append(TurnStats(turn.input.chunk.tick, time.perf_counter() - turn.started, meta.prompt_tokens,
                                    meta.completion_tokens, meta.cached_tokens, meta.e2e_latency))
        self.ready.append(response)

    def _deliver(self) -> StepOutput:
        ready, self.ready = self.ready, []
        if self.mode == "native":
            outs = [self.decoder.decode(r.output_ids) for r in ready]
        else:
            outs = [self.bridge.parse(r.text) for r in ready]
        return merge_outputs(outs)

    async def close(self) -> None:
        """Close the server session (aborting a turn still in flight)."""
        if self.closed:
            return
        self.closed = True
        with trio.CancelScope(shield=True):
            turn, self.inflight = self.inflight, None
            if turn is not None and not turn.done.is_set():
                with contextlib.suppress(SglangError, httpx.HTTPError):
                    await self.backend._post("/abort_request", {"rid": turn.body.rid}, 5.0)
            with contextlib.suppress(SglangError, httpx.HTTPError):
                await self.backend._post("/close_session", {"session_id": self.id}, 5.0)
            await self.backend._session_closed(self)


class _TurnFailed(Exception):
    """The turn did not complete (server error, transport error, retries exhausted): resend its input.
    ``unreachable``: the server could not be reached at all."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


# --- the backend -----------------------------------------------------------------------------------------------


class SglangBackend:
    """Model sessions in an sglang (or ``microturn serve``) server at ``url``.

    ``mode``: ``"native"`` or ``"text"`` (see the module docstring). ``realtime``: None detects it from the trio
    clock (MockClock → lockstep). ``deadline``: seconds a realtime step waits for its reply. ``session_timeout``:
    the idle timeout asked of the server. ``retries``: connection attempts in lockstep; ``max_failures``: failed
    turns in a row before the session gives up. ``client`` / ``nursery`` are given by
    :func:`open_sglang_backend`; ``transport`` (an httpx transport) is for tests."""

    def __init__(self, url: str, *, mode: Mode = "native", realtime: bool | None = None, deadline: float = 0.15,
                 session_timeout: float | None = 300.0, retries: int = 5, backoff: float = 0.01,
                 max_failures: int = 25, request_timeout: float = 30.0, preamble: str | None = None,
                 max_input_tokens: int | None = None, client: httpx.AsyncClient | None = None,
                 nursery: trio.Nursery | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if mode not in ("native", "text"):
            raise ValueError(f"mode: expected 'native' or 'text', got {mode!r}")
        if not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            raise ValueError(f"url: expected http://HOST:PORT, got {url!r}")
        if not deadline > 0:
            raise ValueError(f"deadline: expected seconds > 0, got {deadline!r}")
        self.url = url.rstrip("/")
        self.name = "sglang" if mode == "native" else "sglang-text"
        self.mode: Mode = mode
        self.realtime = realtime
        self.deadline = float(deadline)
        self.session_timeout = session_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_failures = max_failures
        self.request_timeout = request_timeout
        self.preamble = preamble
        self.max_input_tokens = max_input_tokens
        self.client = client
        self.nursery = nursery
        self.transport = transport
        self._own_client = False
        self.sessions: list[SglangSession] = []
        """Every session opened (closed ones included): their ``turns`` are the per-tick statistics."""
        self._open = 0
        self._info: dict[str, Any] | None = None

    async def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(base_url=self.url, transport=self.transport,
                                            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
            self._own_client = True
        return self.client

    async def _session_closed(self, session: SglangSession) -> None:
        self._open -= 1
        if self._open == 0 and self._own_client and self.client is not None:
            client, self.client = self.client, None
            await client.aclose()

    def _timeout(self, session: SglangSession | None = None, seconds: float | None = None) -> float | None:
        """No timeout at all under a MockClock: its autojump would fire any trio deadline at once while the
        reply is on its way (lockstep sessions hold the session clock instead)."""
        if _virtual_time() or (session is not None and not session.realtime):
            return None
        return self.request_timeout if seconds is None else seconds

    async def _post(self, path: str, body: Any, timeout: float | None) -> httpx.Response:
        client = await self._client()
        try:
            response = await client.post(self.url + path, content=msgspec.json.encode(body),
                                         headers={"content-type": "application/json"},
                                         timeout=self._timeout(seconds=timeout))
        except httpx.HTTPError as exc:
            raise SglangError(f"{path}: cannot reach the server at {self.url} ({type(exc).__name__}: {exc})") from exc
        if 400 <= response.status_code < 500:
            raise SglangError(f"{path}: the server refused the request (HTTP {response.status_code}): "
                              f"{_error_message(response)}")
        return response

    async def model_info(self) -> dict[str, Any]:
        """The server's ``/get_model_info`` (empty when it has none)."""
        if self._info is None:
            client = await self._client()
            try:
                r = await client.get(self.url + "/get_model_info", timeout=self._timeout())
                self._info = r.json() if r.status_code == 200 else {}
            except (httpx.HTTPError, ValueError):
                self._info = {}
        return self._info

    async def open_session(self, spec: ModelSpec) -> SglangSession:
        """Open a streaming session on the server."""
        info = await self.model_info()
        k = int(info.get("outputs_per_tick") or spec.outputs_per_tick)
        session_id = await self._open_id()
        if self.max_input_tokens is None:  # the encoder must cut ticks exactly as the model was trained
            self.max_input_tokens = int(info.get("max_input_tokens") or ModelConfig().max_input_tokens)
        session = SglangSession(self, session_id, spec, k)
        self.sessions.append(session)
        self._open += 1
        log.info("sglang_session_opened", session=session_id, url=self.url, mode=self.mode, k=k,
                 realtime=session.realtime)
        return session

    async def _open_id(self) -> str:
        """POST /open_session; the new session's id."""
        body = OpenSessionRequest(capacity_of_str_len=1 << 20, streaming=True, timeout=self.session_timeout)
        response = await self._post("/open_session", body, self.request_timeout)
        if response.status_code != 200:
            raise SglangError(f"/open_session: HTTP {response.status_code}: {_error_message(response)}")
        try:
            session_id = response.json()
        except ValueError:
            session_id = None
        if not isinstance(session_id, str):
            raise SglangError(f"/open_session: expected the session id as a JSON string, got {response.text[:100]!r}")
        return session_id

    async def _post_generate(self, session: SglangSession, body: GenerateRequest, deadline: float) -> GenerateResponse:
        """One /generate, retrying connection errors with backoff (until ``deadline``, or ``retries`` times when
        there is none)."""
        client = await self._client()
        payload = msgspec.json.encode(body)
        delay = self.backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await client.post(self.url + "/generate", content=payload,
                                             headers={"content-type": "application/json"},
                                             timeout=self._timeout(session))
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached the server: safe to resend
                last = exc
            except httpx.TransportError as exc:  # it may have: abort that rid, then treat the turn as failed
                with contextlib.suppress(SglangError, httpx.HTTPError):
                    await self._post("/abort_request", {"rid": body.rid}, 5.0)
                raise _TurnFailed(f"/generate: transport error ({type(exc).__name__}: {exc})") from exc
            now = trio.current_time()
            out_of_time = now + delay > deadline if math.isfinite(deadline) else attempt > self.retries
            if out_of_time:
                raise _TurnFailed(f"/generate: cannot reach {self.url} after {attempt} attempts "
                                  f"({type(last).__name__}: {last})", unreachable=True)
            session.retries += 1
            session.backoffs.append(delay)
            if math.isfinite(deadline):
                await trio.sleep(delay)
            else:  # lockstep: wait real time (a MockClock would skip the wait)
                await trio.to_thread.run_sync(time.sleep, delay)
            delay = min(delay * 2, 1.0)
        if 400 <= response.status_code < 500:
            message = _error_message(response)
            kind = _SessionLost if response.status_code in (400, 404) and _LOST.search(message) else SglangError
            raise kind(f"/generate: the server refused the request (HTTP {response.status_code}): {message}")
        if response.status_code != 200:
            raise _TurnFailed(f"/generate: HTTP {response.status_code}: {_error_message(response)}")
        try:
            return msgspec.json.decode(response.content, type=GenerateResponse)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise SglangError(f"/generate: unexpected answer ({exc}): {response.text[:200]!r}") from None

    async def aclose(self) -> None:
        """Close every open session, then the client if this backend made it."""
        for session in list(self.sessions):
            if not session.closed:
                await session.close()
        if self._own_client and self.client is not None:
            client, self.client = self.client, None
            await client.aclose()


def _virtual_time() -> bool:
    return isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)


def _error_message(response: httpx.Response) -> str:
    """The server's message from an error body (``{"error": {"message": ...}}``), else the raw text."""
    try:
        return msgspec.json.decode(response.content, type=ErrorBody).error.message
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    try:
        doc = msgspec.json.decode(response.content)
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            return doc["message"]
    except msgspec.DecodeError:
        pass
    return response.text[:300] or f"(empty body, HTTP {response.status_code})"


@contextlib.asynccontextmanager
async def open_sglang_backend(url: str, *, transport: httpx.AsyncBaseTransport | None = None,
                              **options: Any) -> AsyncIterator[SglangBackend]:
    """An :class:`SglangBackend` holding one HTTP client and the nursery its in-flight requests run in (needed
    for realtime deadlines); leaving the block closes its sessions and the client."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, transport=transport, limits=limits) as client, \
            trio.open_nursery() as nursery:
        backend = SglangBackend(url, client=client, nursery=nursery, **options)
        try:
            yield backend
        finally:
            with trio.CancelScope(shield=True):
                await backend.aclose()
            nursery.cancel_scope.cancel()

