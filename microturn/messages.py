"""The one catalogue of typed messages every part of microturn speaks.

Every message is a frozen, kw-only msgspec Struct tagged by its class name, and belongs to one of three kinds:

- **system** messages come from the runtime itself (ticks, session and supervision events);
- **data** messages carry the conversation: inputs, features, model output, tool and background results;
- **control** messages (``Interrupt``, ``Cancel``) travel on each actor's control lane, which is read before its
  data mailbox and is never bounded or dropped.

The bus adds a :class:`Stamp` to each message it carries; ``stamp.seq`` is the total order of a session.
Encoding uses one reused msgpack encoder; decoding uses one typed decoder over :data:`AnyMessage`, and any
malformed or unknown input raises :class:`MessageDecodeError` naming the field and the value.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Union

import msgspec

__all__ = [
    "Stamp",
    "Message",
    "SystemMessage",
    "DataMessage",
    "ControlMessage",
    "Tick",
    "SessionStarted",
    "SessionEnded",
    "ActorFailed",
    "ActorRestarted",
    "UserAudio",
    "UserText",
    "UserImage",
    "RecognizedWord",
    "RecognizedWords",
    "InputChunk",
    "DialogState",
    "OutputChunk",
    "SpeechStarted",
    "SpeechEnded",
    "TranscriptLine",
    "ContextPackage",
    "Delegate",
    "ToolCall",
    "BackgroundUpdate",
    "ToolResult",
    "ToolProgress",
    "Playout",
    "Heard",
    "Mark",
    "Verdict",
    "Interrupt",
    "Cancel",
    "AnyMessage",
    "MESSAGE_TYPES",
    "MessageDecodeError",
    "encode",
    "decode",
    "describe",
]


class Stamp(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Where a message sits in its session: the tick window it was published in, its global sequence number,
    the name of the part that published it, and the session time of publication in seconds."""

    tick: int
    seq: int
    source: str
    time: float


class Message(msgspec.Struct, frozen=True, kw_only=True, tag=True, omit_defaults=True):
    """Base of every message. ``stamp`` is None until the bus carries the message."""

    stamp: Stamp | None = None


class SystemMessage(Message, frozen=True, kw_only=True):
    """A message from the runtime itself. Never dropped."""


class DataMessage(Message, frozen=True, kw_only=True):
    """A message of the conversation; subscribers choose how overflow is handled."""


class ControlMessage(Message, frozen=True, kw_only=True):
    """A message for the control lane: read before any queued data, never bounded, never dropped."""


# --- runtime -------------------------------------------------------------------------------------------------


class Tick(SystemMessage, frozen=True, kw_only=True):
    """The end of micro-turn window ``tick``: [tick * period, (tick + 1) * period) seconds of session time.

    ``lateness`` is how far after its deadline the clock published it (always 0.0 in lockstep)."""

    tick: int
    lateness: float = 0.0


class SessionStarted(SystemMessage, frozen=True, kw_only=True):
    """Every actor is ready; the clock is about to run."""

    session_id: str
    mode: Literal["realtime", "lockstep"]
    tick_period: float
    actors: list[str]


class SessionEnded(SystemMessage, frozen=True, kw_only=True):
    """The session is shutting down; ``error`` names the actor and cause when it failed."""

    reason: Literal["finished", "cancelled", "failed"]
    ticks: int
    error: str | None = None


class ActorFailed(SystemMessage, frozen=True, kw_only=True):
    """An actor raised; ``will_restart`` says whether its restart policy allows another try."""

    actor: str
    error: str
    failures: int
    will_restart: bool


class ActorRestarted(SystemMessage, frozen=True, kw_only=True):
    """An actor is running again after a failure; its mailbox (and control lane) were kept."""

    actor: str
    restarts: int


# --- inputs from a transport or a scenario -------------------------------------------------------------------


class UserAudio(DataMessage, frozen=True, kw_only=True):
    """Little-endian PCM16 audio from the user, interleaved when ``channels`` > 1."""

    pcm: bytes
    sample_rate: int = 16000
    channels: int = 1


class UserText(DataMessage, frozen=True, kw_only=True):
    """Text the user typed (or a transcript a transport already has)."""

    text: str


class UserImage(DataMessage, frozen=True, kw_only=True):
    """An image the user shows: raw RGB (``width`` x ``height`` x 3 bytes) or an encoded PNG/JPEG."""

    data: bytes
    format: Literal["rgb", "png", "jpeg"] = "rgb"
    width: int = 0
    height: int = 0


class RecognizedWord(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One recognised word with its start/end in session seconds (audio-stream time)."""

    text: str
    start: float
    end: float


class RecognizedWords(DataMessage, frozen=True, kw_only=True):
    """The speech recognizer's hypothesis for user utterance ``utterance_id``: partials while the user speaks,
    then one ``final``. The final's text is also published as a ``UserText``, so the dialog state and the model
    hear it exactly as a typed transcript."""

    utterance_id: int
    final: bool
    words: list[RecognizedWord] = []


# --- perception, dialog state --------------------------------------------------------------------------------


class InputChunk(DataMessage, frozen=True, kw_only=True):
    """Everything that arrived during window ``tick``.

    ``dmel`` holds ``n_frames`` x 80 uint8 levels (row-major); ``patches`` holds ``n_patches`` x 40 x 40 x 3 uint8
    RGB, image after image, each row-major over its ``image_grids`` entry (patch rows, patch columns);
    ``text`` is raw (the model backend tokenizes). ``speech_end`` is set when sound ends inside the window:
    seconds from the window's start to the end of its last 10 ms frame above the floor (None when the window
    is silent or sounds to its end); ``speech_final`` is then the prosody of the last ~300 ms before that end
    (True: falling pitch or decaying energy, a finished turn; False: level or rising, going on)."""

    tick: int
    dmel: bytes = b""
    n_frames: int = 0
    text: str = ""
    patches: bytes = b""
    n_patches: int = 0
    image_grids: list[tuple[int, int]] = []
    speech_prob: float = 0.0
    speech_end: float | None = None
    speech_final: bool | None = None


UserFloorState = Literal["speaking", "pausing", "thinking", "yielding", "inviting", "interrupting", "away"]
AssistantFloorState = Literal["silent", "speaking", "backchanneling"]


class DialogState(DataMessage, frozen=True, kw_only=True):
    """Who holds the floor and what each side is doing; published on every change."""

    floor: Literal["user", "assistant", "none"]
    user: UserFloorState
    assistant: AssistantFloorState


# --- interaction model ---------------------------------------------------------------------------------------


class OutputChunk(DataMessage, frozen=True, kw_only=True):
    """What the interaction model emits for window ``tick``: text, optional audio frames, control tokens."""

    tick: int
    generation: int
    text: str = ""
    audio: bytes = b""
    controls: list[str] = []


class SpeechStarted(DataMessage, frozen=True, kw_only=True):
    """The assistant began utterance ``utterance_id`` in generation ``generation``."""

    utterance_id: int
    generation: int


class SpeechEnded(DataMessage, frozen=True, kw_only=True):
    """The assistant's utterance ended, either completed or cut off by an interruption."""

    utterance_id: int
    generation: int
    reason: Literal["completed", "interrupted"]


class TranscriptLine(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the conversation as it happened."""

    speaker: Literal["user", "assistant", "background", "tool"]
    text: str
    tick: int


class ContextPackage(msgspec.Struct, frozen=True, kw_only=True):
    """The complete context handed to the background reasoner with a delegated task."""

    transcript: list[TranscriptLine] = []
    heard: list[str] = []
    dialog_state: str = ""
    tools: list[str] = []


class Delegate(DataMessage, frozen=True, kw_only=True):
    """Hand a task to the background reasoner."""

    task_id: str
    goal: str
    context: ContextPackage = ContextPackage()
    generation: int = 0


class ToolCall(DataMessage, frozen=True, kw_only=True):
    """Ask the tool runner to call tool ``name`` with ``args``."""

    call_id: str
    name: str
    args: dict[str, Any] = {}
    generation: int = 0


# --- background reasoner, tools ------------------------------------------------------------------------------


class BackgroundUpdate(DataMessage, frozen=True, kw_only=True):
    """Progress of a delegated task, with how the output side should deliver it."""

    task_id: str
    status: Literal["started", "progress", "final", "failed", "cancelled"]
    text: str = ""
    delivery: Literal["interrupt", "when_idle", "silent"] = "when_idle"


class ToolResult(DataMessage, frozen=True, kw_only=True):
    """The outcome of a ``ToolCall``: ``value`` when ``ok``, else ``error``; ``elapsed`` in session seconds."""

    call_id: str
    ok: bool
    value: Any = None
    error: str | None = None
    elapsed: float = 0.0


class ToolProgress(DataMessage, frozen=True, kw_only=True):
    """A note from a tool call still running: what it is doing and, when known, how far along it is (0..1).

    Published by the tool runner (a tool's own progress reports, or the runner's notes, e.g. a side-effecting
    tool that outlived its timeout). Informational: the result still arrives as one ``ToolResult``."""

    call_id: str
    text: str = ""
    fraction: float | None = None


# --- output mixer --------------------------------------------------------------------------------------------


class Playout(DataMessage, frozen=True, kw_only=True):
    """What the user hears during window ``tick``: text and PCM16 at ``sample_rate``."""

    tick: int
    utterance_id: int
    text: str = ""
    pcm: bytes = b""
    sample_rate: int = 16000


class Heard(DataMessage, frozen=True, kw_only=True):
    """The ledger of what the user actually heard of an utterance (the truth after a barge-in)."""

    utterance_id: int
    text_heard: str
    truncated: bool


# --- scenarios and tests ------------------------------------------------------------------------------------


class Mark(DataMessage, frozen=True, kw_only=True):
    """A named point on the session's timeline (set by a scenario or a test), for expectations and reports."""

    name: str


class Verdict(DataMessage, frozen=True, kw_only=True):
    """What a judge model decided about a scenario's judged expectation (``expect[expectation]``), published by
    the scenario runner at the end of the session (source ``judge``): the recording holds the verdict, so
    replay and re-checks never need the model. ``verdict`` is ``not_judged`` when no judge was configured or
    it gave no usable answer; ``reason`` says why, ``judge`` names the model."""

    expectation: int
    criterion: str
    verdict: Literal["pass", "fail", "not_judged"]
    reason: str = ""
    judge: str = ""


# --- control lane --------------------------------------------------------------------------------------------


class Interrupt(ControlMessage, frozen=True, kw_only=True):
    """Cancel everything in flight that belongs to ``generation`` (and any older one)."""

    generation: int
    reason: str = ""


class Cancel(ControlMessage, frozen=True, kw_only=True):
    """Cancel one background task or tool call by id."""

    task_id: str
    reason: str = ""


AnyMessage = Union[
    Tick,
    SessionStarted,
    SessionEnded,
    ActorFailed,
    ActorRestarted,
    UserAudio,
    UserText,
    UserImage,
    RecognizedWords,
    InputChunk,
    DialogState,
    OutputChunk,
    SpeechStarted,
    SpeechEnded,
    Delegate,
    ToolCall,
    BackgroundUpdate,
    ToolResult,
    Playout,
    Heard,
    Mark,
    Verdict,
    ToolProgress,
    Interrupt,
    Cancel,
]
"""The union of every message in the catalogue: what the decoder accepts."""

MESSAGE_TYPES: dict[str, type[Message]] = {cls.__name__: cls for cls in AnyMessage.__args__}
"""Each message class by its tag."""


class MessageDecodeError(ValueError):
    """Bytes that are not a valid message: names the field (a ``$.path``) and the offending value."""

    def __init__(self, reason: str, *, field: str | None = None, value: Any = None) -> None:
        self.reason = reason
        self.field = field
        self.value = value
        where = f" at field {field!r}" if field else ""
        shown = f" (value {_short_repr(value)})" if field else ""
        super().__init__(f"cannot decode message{where}{shown}: {reason}")


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyMessage)
_raw_decoder = msgspec.msgpack.Decoder()
_PATH = re.compile(r" - at `(\$[^`]*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z_0-9]*)|\[(\d+)\]|\[\.\.\.\]")


def encode(message: Message) -> bytes:
    """Encode one message to msgpack with the process-wide encoder."""
    return _encoder.encode(message)


def decode(data: bytes | bytearray | memoryview) -> AnyMessage:
    """Decode msgpack bytes into a typed message; raise :class:`MessageDecodeError` for anything else."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _explain(data, exc) from None


def describe(message: Message, *, limit: int = 120) -> str:
    """A one-line readable summary of a message's fields (bytes shown by length), for timelines and logs."""
    parts = []
    for name in message.__struct_fields__:
        if name == "stamp":
            continue
        parts.append(f"{name}={_short_repr(getattr(message, name), limit=40)}")
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_repr(value: Any, limit: int = 60) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _explain(data: Any, exc: msgspec.DecodeError) -> MessageDecodeError:
    """Turn msgspec's error into ours, finding the offending value by walking the error's path in the raw
    (untyped) decoding of the same bytes."""
    text = str(exc)
    match = _PATH.search(text)
    if not isinstance(exc, msgspec.ValidationError) or match is None:
        missing = _MISSING.search(text)
        if missing is not None:
            return MessageDecodeError(text, field=f"$.{missing.group(1)}", value=None)
        return MessageDecodeError(text if text else "malformed msgpack")
    path = match.group(1)
    reason = text[: match.start()]
    try:
        value: Any = _raw_decoder.decode(data)
        for step in _STEP.finditer(path):
            key, index = step.group(1), step.group(2)
            if key is not None:
                value = value[key] if isinstance(value, dict) else value
            elif index is not None:
                value = value[int(index)]
    except Exception:  # noqa: BLE001 - the path is a best-effort pointer; the reason still stands
        value = None
    if path == "$" and isinstance(value, dict) and "type" not in value:
        reason = "missing the message tag field 'type'"
    return MessageDecodeError(reason, field=path, value=value)
