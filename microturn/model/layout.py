"""The stream layout: how one tick's inputs and outputs become one segment of the model's sequence (torch-free).

One tick's segment is::

    [TICK] [floor] [user] [assistant] [speaking] [vad]          fixed header (MAX_INPUT_HEADER tokens)
    queued input items, at most ``max_input_tokens`` of them:
        DMEL x n_frames                                       one position per dMel frame (80 levels 0..15)
        USER_TEXT b b b ...                                   the chunk's text, byte-level UTF-8
        IMAGE rows cols PATCH x (rows*cols)                   one position per 40x40x3 patch
        HEARD full|truncated b b ...                          what the user actually heard
        BG status delivery b b ...                            background updates
        TOOL ok|failed b b ...                                tool results (msgspec JSON of value, or error)
    up to K output tokens: text bytes, control tokens, ARG payload ARG_END, closed by END when fewer than K

Input items beyond ``max_input_tokens`` wait in a FIFO for the next tick (nothing is dropped), which bounds the
positions a step appends and hence the ring buffer of local layers. Text is byte-level, so there is no tokenizer
to download. The ``DMEL``/``PATCH`` positions carry a frame or patch that the model embeds in place of a token
embedding.

Outputs (:class:`OutputPacker`, used to build training targets from the scripted oracle) put each tick's control
decisions first, then its words, then payloads: the tick's control tokens open its slots, the text
(``text + " "``, queued in its own FIFO) fills the slots after them, and a ``delegate`` / ``tool_call``
payload (the goal text, or the tool's name followed, when it has arguments, by a space and their JSON; closed
by ``ARG_END``) takes the slots the text leaves, each tick's share opened by ``ARG``. So text length never moves
a control to a later tick, and a long payload never holds back the words that go with it: the first word of a
reply that calls a tool goes out in the tick the reply starts, and the call follows as its payload fills the
spare slots (the oracle speaks half a word per tick, so most slots are spare). The rule that keeps the order
guarantees:

* ``end_utterance`` closes the text queued up to it, so it is held until the tick whose slots release that
  text's last byte; it goes ahead of that tick's text (after its controls), and no later text shares the tick.
  It never overtakes its last words, and the runtime sees the utterance's last words and its end in one step.
* ``silence`` while text is still queued is held the same way (it would otherwise cut words still queued);
  while an ``end_utterance`` is already held it is dropped (the utterance is ending anyway). With nothing
  queued, it goes first like any control.

:class:`OutputDecoder` turns decoded tokens back into a :class:`StepOutput`: words are released at spaces (a
word split across ticks waits for its end), and a ``delegate`` / ``tool_call`` control is released with its
payload.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import msgspec
import numpy as np

from .protocol import CONTROL_TOKENS, StepInput, StepOutput, ToolRequest

__all__ = [
    "ARG",
    "ARG_END",
    "ASSISTANT",
    "CONTROLS",
    "DMEL",
    "END",
    "FLOOR",
    "IMAGE",
    "MAX_INPUT_HEADER",
    "OUTPUT_TOKENS",
    "PAD",
    "PATCH",
    "SPEAKING",
    "TICK",
    "VOCAB_SIZE",
    "EncodedTick",
    "LayoutError",
    "OutputDecoder",
    "OutputPacker",
    "TickEncoder",
    "token_name",
]


class LayoutError(ValueError):
    """An input or output cannot be laid out (bad frame or patch sizes, an unknown control token)."""


CONTROLS = (*CONTROL_TOKENS, "translate")
"""Output control tokens: the protocol's CONTROL_TOKENS plus ``translate`` (the scripted oracle emits it)."""

_names: list[str] = []


def _tok(name: str) -> int:
    _names.append(name)
    return 255 + len(_names)


PAD = _tok("PAD")
TICK = _tok("TICK")
END = _tok("END")
ARG = _tok("ARG")
ARG_END = _tok("ARG_END")
DMEL = _tok("DMEL")
PATCH = _tok("PATCH")
IMAGE = _tok("IMAGE")
USER_TEXT = _tok("USER_TEXT")
HEARD = {False: _tok("HEARD_FULL"), True: _tok("HEARD_TRUNCATED")}
BG_STATUS = {s: _tok(f"BG_{s}") for s in ("started", "progress", "final", "failed", "cancelled")}
BG_DELIVERY = {d: _tok(f"DELIVER_{d}") for d in ("interrupt", "when_idle", "silent")}
TOOL = {True: _tok("TOOL_OK"), False: _tok("TOOL_FAILED")}
FLOOR = {f: _tok(f"FLOOR_{f}") for f in (None, "user", "assistant", "none")}
USER = {u: _tok(f"USER_{u}") for u in
        (None, "speaking", "pausing", "thinking", "yielding", "inviting", "interrupting", "away")}
ASSISTANT = {a: _tok(f"ASSISTANT_{a}") for a in (None, "silent", "speaking", "backchanneling")}
SPEAKING = {False: _tok("SPEAKING_NO"), True: _tok("SPEAKING_YES")}
VAD = [_tok(f"VAD_{i}") for i in range(4)]
CONTROL = {c: _tok(f"CTRL_{c}") for c in CONTROLS}
CONTROL_OF = {v: k for k, v in CONTROL.items()}

VOCAB_SIZE = 256 + len(_names)
MAX_INPUT_HEADER = 6
OUTPUT_TOKENS = tuple(range(256)) + (END, ARG, ARG_END) + tuple(CONTROL.values())
"""Token ids a step may decode (the others are inputs only and are masked at output positions)."""

DMEL_BYTES = 80
PATCH_BYTES = 40 * 40 * 3
_SPACE = ord(" ")


def token_name(token: int) -> str:
    """A readable name for a token id (a byte shows as its character)."""
    if 0 <= token < 256:
        return repr(chr(token))
    if 256 <= token < VOCAB_SIZE:
        return _names[token - 256]
    raise LayoutError(f"token: expected an id in [0, {VOCAB_SIZE}), got {token}")


@dataclass
class EncodedTick:
    """One step's appended positions: token ids, plus the dMel frames and patches of the DMEL/PATCH positions
    (in order). ``n_inputs`` of ``tokens`` are inputs; outputs, if any, follow (training targets)."""

    tokens: list[int]
    dmel: list[bytes] = field(default_factory=list)
    patches: list[bytes] = field(default_factory=list)

    def extend(self, other: EncodedTick) -> None:
        """Append another segment."""
        self.tokens += other.tokens
        self.dmel += other.dmel
        self.patches += other.patches

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens int64 [n], dmel uint8 [n_dmel, 80], patches uint8 [n_patch, 40, 40, 3])."""
        tokens = np.asarray(self.tokens, dtype=np.int64)
        dmel = np.frombuffer(b"".join(self.dmel), dtype=np.uint8).reshape(len(self.dmel), DMEL_BYTES)
        patches = np.frombuffer(b"".join(self.patches), dtype=np.uint8).reshape(len(self.patches), 40, 40, 3)
        return tokens, dmel, patches


class TickEncoder:
    """Turns each tick's :class:`StepInput` into its input positions (stateful: a FIFO of input items)."""

    def __init__(self, max_input_tokens: int) -> None:
        self.max_input_tokens = max_input_tokens
        self.queue: deque[tuple[int, bytes | None]] = deque()

    def _text(self, tag: list[int], text: str) -> None:
        if not text:
            return
        self.queue.extend((t, None) for t in tag)
        self.queue.extend((b, None) for b in text.encode("utf-8"))

    def encode(self, step_input: StepInput) -> EncodedTick:
        """The header plus as many queued items as fit; the rest waits for the next tick."""
        chunk = step_input.chunk
        if len(chunk.dmel) != chunk.n_frames * DMEL_BYTES:
            raise LayoutError(f"chunk.dmel: expected n_frames*80 = {chunk.n_frames * DMEL_BYTES} bytes, "
                              f"got {len(chunk.dmel)}")
        if len(chunk.patches) != chunk.n_patches * PATCH_BYTES:
            raise LayoutError(f"chunk.patches: expected n_patches*4800 = {chunk.n_patches * PATCH_BYTES} bytes, "
                              f"got {len(chunk.patches)}")
        dialog = step_input.dialog
        vad = min(3, max(0, int(chunk.speech_prob * 4)))
        tokens = [
            TICK,
            FLOOR.get(dialog.floor if dialog else None, FLOOR[None]),
            USER.get(dialog.user if dialog else None, USER[None]),
            ASSISTANT.get(dialog.assistant if dialog else None, ASSISTANT[None]),
            SPEAKING[bool(step_input.speaking)],
            VAD[vad],
        ]
        for i in range(chunk.n_frames):
            self.queue.append((DMEL, chunk.dmel[i * DMEL_BYTES:(i + 1) * DMEL_BYTES]))
        self._text([USER_TEXT], chunk.text)
        first = 0
        for rows, cols in chunk.image_grids:
            n = rows * cols
            self.queue.extend([(IMAGE, None), (min(rows, 255), None), (min(cols, 255), None)])
            for p in range(first, min(first + n, chunk.n_patches)):
                self.queue.append((PATCH, chunk.patches[p * PATCH_BYTES:(p + 1) * PATCH_BYTES]))
            first += n
        for heard in step_input.heard:
            self._text([HEARD[bool(heard.truncated)]], heard.text_heard or " ")
        for update in step_input.background:
            tag = [BG_STATUS.get(update.status, BG_STATUS["progress"]), BG_DELIVERY.get(update.delivery, BG_DELIVERY["when_idle"])]
            self._text(tag, update.text or " ")
        for result in step_input.tool_results:
            body = msgspec.json.encode(result.value).decode() if result.ok else str(result.error or "error")
            self._text([TOOL[bool(result.ok)]], body)
        out = EncodedTick(tokens)
        for _ in range(min(self.max_input_tokens, len(self.queue))):
            token, payload = self.queue.popleft()
            out.tokens.append(token)
            if token == DMEL:
                out.dmel.append(payload)  # type: ignore[arg-type]
            elif token == PATCH:
                out.patches.append(payload)  # type: ignore[arg-type]
        return out

    def state(self) -> list[tuple[int, bytes | None]]:
        """The pending items (for snapshots)."""
        return list(self.queue)

    def load(self, state: list[tuple[int, bytes | None]]) -> None:
        """Restore pending items from :meth:`state`."""
        self.queue = deque(state)


def _tool_payload(call: ToolRequest | None) -> bytes:
    """A tool call's payload: its name, then a space and its arguments as JSON when it has any (every byte spelled
    out costs a slot, so no JSON wrapper around the name)."""
    if call is None:
        return b""
    name = call.name.encode("utf-8")
    return name + b" " + msgspec.json.encode(call.args) if call.args else name


def _parse_tool_payload(payload: bytes) -> ToolRequest | None:
    """The :class:`ToolRequest` a payload spells, or None when it does not parse."""
    name, _, args = payload.partition(b" ")
    if not name:
        return None
    try:
        parsed = msgspec.json.decode(args) if args else {}
    except msgspec.DecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    return ToolRequest(name=name.decode("utf-8", errors="replace"), args=parsed)


class OutputPacker:
    """Turns the oracle's per-tick :class:`StepOutput` into at most K output tokens (stateful).

    Controls first, then text, then payloads: a tick's control tokens open its slots, its text (a FIFO across
    ticks) fills the slots after them, and ``delegate`` / ``tool_call`` payloads (a FIFO of bytes, each closed by
    ``ARG_END``) take what is left, behind an ``ARG`` that opens each tick's share. ``end_utterance`` (and a
    ``silence`` while text is still queued) *closes* the text queued before it: it is held until the tick whose
    text slots release that text's last byte, goes ahead of that tick's text, and no later text shares the tick.
    A ``silence`` while a close is already pending is dropped (the utterance is ending).
    """

    def __init__(self, outputs_per_tick: int) -> None:
        self.k = outputs_per_tick
        self.controls: deque[int] = deque()
        """Control tokens not yet emitted (only more controls than slots in one tick spill over)."""
        self.text: deque[int] = deque()
        self.payload: deque[int] = deque()
        """Payload bytes not yet emitted, each payload closed by ARG_END."""
        self.closing: deque[tuple[int, int]] = deque()
        """Held closers: (control token, text bytes still to go before it), oldest first."""

    def pack(self, out: StepOutput) -> list[int]:
        """Queue this tick's output and return the tokens emitted for it (END-terminated when fewer than K)."""
        text = out.text.strip()
        queued_before = len(self.text)
        if text:
            self.text.extend(text.encode("utf-8") + b" ")
        for control in dict.fromkeys(out.controls):
            if control not in CONTROL:
                raise LayoutError(f"controls: unknown control token {control!r}; expected one of {CONTROLS}")
            if control == "end_utterance":
                self.closing.append((CONTROL[control], len(self.text)))
                continue
            if control == "silence" and (self.closing or queued_before):
                if not self.closing:
                    self.closing.append((CONTROL[control], queued_before))
                continue
            self.controls.append(CONTROL[control])
            if control == "delegate":
                self.payload.extend((out.delegate or "").encode("utf-8"))
            elif control == "tool_call":
                self.payload.extend(_tool_payload(out.tool_call))
            else:
                continue
            self.payload.append(ARG_END)
        tokens = [self.controls.popleft() for _ in range(min(self.k, len(self.controls)))]
        room = self.k - len(tokens)
        stop = len(self.text)  # text bytes this tick may release
        while self.closing and self.closing[0][1] <= min(room - 1, stop):
            token, left = self.closing.popleft()
            tokens.append(token)
            room -= 1
            stop = left  # nothing past the closed text shares the tick
        n = min(room, stop)
        tokens += [self.text.popleft() for _ in range(n)]
        room -= n
        self.closing = deque((t, left - n) for t, left in self.closing)
        opened = False
        while self.payload and room > (0 if opened else 1):
            if not opened:
                tokens.append(ARG)
                room -= 1
            token = self.payload.popleft()
            tokens.append(token)
            room -= 1
            opened = token != ARG_END  # the next payload opens with its own ARG
        if len(tokens) < self.k:
            tokens.append(END)
        return tokens


class OutputDecoder:
    """Turns each tick's decoded output tokens back into a :class:`StepOutput` (stateful across ticks)."""

    def __init__(self) -> None:
        self.word = bytearray()
        self.arg: bytearray | None = None
        self.held: list[str] = []
        """``delegate`` / ``tool_call`` controls waiting for their payloads, oldest first."""
        self.malformed = 0
        """Payloads that did not parse (a tool call whose JSON is broken): dropped, counted here."""

    def decode(self, tokens: list[int]) -> StepOutput:
        """One tick's tokens (up to END) to a StepOutput."""
        words: list[bytes] = []
        controls: list[str] = []
        delegate: str | None = None
        tool_call: ToolRequest | None = None
        in_payload = False  # each tick's payload bytes come after its ARG
        for token in tokens:
            if token == END:
                break
            if token < 256:
                if in_payload:
                    self.arg.append(token)  # type: ignore[union-attr]
                elif token == _SPACE:
                    if self.word:
                        words.append(bytes(self.word))
                    self.word.clear()
                else:
                    self.word.append(token)
            elif token == ARG:
                in_payload = True
                if self.arg is None:  # else the payload goes on from the last tick
                    self.arg = bytearray()
            elif token == ARG_END:
                payload, self.arg, in_payload = bytes(self.arg or b""), None, False
                held = self.held.pop(0) if self.held else None
                if held == "delegate" and payload:
                    delegate = payload.decode("utf-8", errors="replace")
                    controls.append(held)
                elif held == "tool_call":
                    tool_call = _parse_tool_payload(payload)
                    if tool_call is None:
                        self.malformed += 1
                    else:
                        controls.append(held)
            elif token in CONTROL_OF:
                control = CONTROL_OF[token]
                if control in ("delegate", "tool_call"):
                    self.held.append(control)  # released with its payload
                elif control not in controls:
                    controls.append(control)
        text = " ".join(w.decode("utf-8", errors="replace") for w in words)
        return StepOutput(text=text, controls=controls, delegate=delegate, tool_call=tool_call)

    def state(self) -> tuple[bytes, bytes | None, tuple[str, ...], int]:
        """The decoder's carry-over (for snapshots)."""
        arg = None if self.arg is None else bytes(self.arg)
        return bytes(self.word), arg, tuple(self.held), self.malformed

    def load(self, state: tuple[bytes, bytes | None, tuple[str, ...], int]) -> None:
        """Restore from :meth:`state`."""
        word, arg, held, self.malformed = state
        self.word = bytearray(word)
        self.arg = None if arg is None else bytearray(arg)
        self.held = list(held)
