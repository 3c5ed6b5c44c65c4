"""The scenario format: a TOML file decoded with msgspec into typed, frozen Structs.

A scenario holds its metadata and tags, the model backend and its options, a timeline of user events (each at
an absolute time or relative to something observed in the session), the scripted behaviour of tools and of
the background reasoner, and expectations with budgets in ms or ticks. :func:`load_scenario` reads a file;
:mod:`microturn.scenarios.builder` builds the same Structs from Python. Both end in :func:`validate`, so a
scenario is checked the same way however it was written.

Every problem raises :class:`ScenarioError`, which names the file, the line (when it can be found), the key
(e.g. ``timeline[2].after``) and the offending value.

Everything is bounded (see ``MAX_*`` below): the file's size, how deeply it nests (checked on the raw text, before
the parser could recurse), string and list lengths, and every time, delay, latency and budget (finite, at most
:data:`MAX_SECONDS`); regular expressions that can backtrack catastrophically are refused (:func:`pattern_problem`).

A complete example (every key is documented on the Struct that holds it)::

    name = "barge-in-early"
    description = "The user talks over the assistant's answer 600 ms in; it must stop."
    category = "barge_in"
    tags = ["speech", "interruption"]
    duration = 9.0                       # seconds of session time to run

    [model]
    name = "scripted"                    # the interaction backend (see microturn.assembly.BACKENDS)
    options = {}                         # passed to the backend's constructor

    [speech]
    mode = "speech"                      # say events as espeak-ng audio ("text": words at a speaking rate)

    [[timeline]]
    id = "hello"
    kind = "say"
    at = 0.4
    text = "hello there"                 # role = "turn" (default): ends with the mark user:turn_end

    [[timeline]]
    kind = "interrupt"                   # the user barges in: mark user:barge_in at its start
    after = "assistant_starts_speaking"
    delay_ms = 600
    text = "wait, stop, stop please"

    [[tools]]
    name = "session_time"
    latency_ms = 50                      # result omitted: the session time of the call

    # [world]                            # instead of [[tools]] / [[background]]: the live loop's real parts
    # tools = "builtin"                  # the real tool runner with the built-in tools (set_timer, calculate...)
    # background = "offline"             # the real background actor with the offline planner

    [[expect]]
    kind = "responds_within"
    after = "user:turn_end"
    budget_ms = 1000

    [[expect]]
    kind = "stops_within"
    after = "user:barge_in"
    budget_ms = 1200
"""

from __future__ import annotations

import datetime
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import msgspec

from microturn.assembly import dialog_timing_problem, is_file_spec, resolve_module_spec
from microturn.runtime import MicroturnError

from .references import check_reference, parse_reference

# sre_parse's home since 3.11 (the old name warns): the pattern check reads the parsed pattern
_sre_parser: Any = re._parser  # type: ignore[attr-defined]
_sre: Any = re._constants  # type: ignore[attr-defined]

__all__ = [
    "TICK_PERIOD",
    "ScenarioError",
    "Scenario",
    "ModelConfig",
    "SpeechConfig",
    "ToolBehaviour",
    "BackgroundBehaviour",
    "WorldConfig",
    "Event",
    "Say",
    "Interrupt",
    "Play",
    "Image",
    "Silence",
    "Pause",
    "Noise",
    "Cough",
    "MarkEvent",
    "AnyEvent",
    "Expectation",
    "RespondsWithin",
    "SilentBetween",
    "StopsWithin",
    "KeepsSpeaking",
    "HeardWithin",
    "Says",
    "DoesNotSay",
    "ToolCalled",
    "NoToolCalled",
    "Judged",
    "AnyExpectation",
    "EVENT_KINDS",
    "EXPECTATION_KINDS",
    "load_scenario",
    "loads_scenario",
    "validate",
    "encode_scenario",
    "decode_scenario",
    "check_limits",
    "pattern_problem",
    "MAX_SECONDS",
    "MAX_SCENARIO_BYTES",
    "MAX_DEPTH",
    "MAX_STRING_CHARS",
    "MAX_ITEMS",
    "MAX_PATTERN_CHARS",
]

TICK_PERIOD = 0.2
"""Seconds per micro-turn in every scenario session (``delay_ticks`` and ``budget_ticks`` count these)."""

STANDIN_BACKGROUND_TEXT = "I have no background reasoner yet, so I cannot look that up."
"""What the default background double answers (the demo stand-in's words)."""

MAX_SECONDS = 3600.0
"""The longest a scenario may run, and so the largest time, delay, latency or budget it may name (seconds)."""

MAX_SCENARIO_BYTES = 256 * 1024
"""The largest scenario file (bytes); the library's scenarios are a few KiB."""

MAX_DEPTH = 16
"""How deeply tables and arrays may nest (checked on the raw text before parsing, so no parser recursion)."""

MAX_STRING_CHARS = 10_000
"""The longest string anywhere in a scenario (a ``say`` text, a tool result, a key)."""

MAX_ITEMS = 1000
"""The most entries in one list or table (timeline events, expectations, tags, option keys...)."""

MAX_VALUES = 100_000
"""The most values in a whole scenario (bounds a scenario built in Python, which has no file size)."""

MAX_PATTERN_CHARS = 1000
"""The longest regular expression (``says`` patterns, ``[[background]]`` goals)."""

_MAX_TICKS = round(MAX_SECONDS / TICK_PERIOD)

NonNegative = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
"""Seconds: finite, from 0 to :data:`MAX_SECONDS` (NaN and infinity fail the range)."""
Positive = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
Millis = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS * 1000)]
"""Milliseconds: finite, from 0 to :data:`MAX_SECONDS` in ms."""
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Ticks = Annotated[int, msgspec.Meta(ge=0, le=_MAX_TICKS)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Nth = Annotated[int, msgspec.Meta(ge=1, le=MAX_ITEMS)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Byte = Annotated[int, msgspec.Meta(ge=0, le=255)]
Wpm = Annotated[int, msgspec.Meta(ge=80, le=450)]
Role = Literal["turn", "partial", "backchannel", "barge_in", "noise", "none"]
Reference = Union[str, NonNegative]
"""A point in the session: a reference name (see :mod:`microturn.scenarios.triggers`) or seconds."""


class ScenarioError(MicroturnError, ValueError):
    """A scenario that cannot be loaded or run: names the file, line, key and value where they are known."""

    _UNSET: Any = object()

    def __init__(
        self,
        reason: str,
        *,
        file: str | os.PathLike[str] | None = None,
        line: int | None = None,
        key: str | None = None,
        value: Any = _UNSET,
    ) -> None:
        self.reason = reason
        self.file = os.fspath(file) if file is not None else None
        self.line = line
        self.key = key
        self.value = None if value is self._UNSET else value
        self.has_value = value is not self._UNSET
        where = ""
        if self.file is not None:
            where = self.file + (f":{line}" if line is not None else "") + ": "
        what = ""
        if key is not None:
            what = key + (f" = {_show(value)}" if value is not self._UNSET else "") + ": "
        super().__init__(f"{where}{what}{reason}")

    def located(self, file: str | os.PathLike[str], line: int | None) -> ScenarioError:
        """The same error, placed in ``file`` at ``line``."""
        value = self.value if self.has_value else self._UNSET
        return ScenarioError(self.reason, file=file, line=line, key=self.key, value=value)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Struct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of the format's Structs: unknown keys are errors, defaults are left out when encoded."""


# --- configuration ------------------------------------------------------------------------------------------


class ModelConfig(_Struct, frozen=True, kw_only=True):
    """``[model]``: the interaction backend by name, options for its constructor, and the model spec."""

    name: NonEmpty = "embedded"
    """``embedded`` (the shipped trained model, the default), ``scripted`` (the rule policy the model was
    trained to imitate), or ``local:PATH`` (another checkpoint)."""
    options: dict[str, Any] = {}
    outputs_per_tick: PositiveInt = 8
    seed: int = 0


class SpeechConfig(_Struct, frozen=True, kw_only=True):
    """``[speech]``: how ``say`` events are delivered unless an event says otherwise.

    ``mode = "text"``: the words arrive as ``UserText`` pieces at ``wpm`` words per minute (default 300, one
    word per 200 ms micro-turn: the dialog-state actor takes a tick with text as a tick of speech, so a slower
    transcript reads as a pause after every word). ``mode = "speech"``: espeak-ng audio (cached) at ``wpm``
    (default 175) in 200 ms ``UserAudio`` pieces, and the transcript as one ``UserText`` in the last piece's
    window, as a streaming recogniser would deliver it."""

    mode: Literal["text", "speech"] = "text"
    wpm: Wpm | None = None
    voice: NonEmpty = "en-us"


class ToolBehaviour(_Struct, frozen=True, kw_only=True):
    """``[[tools]]``: how the scripted tool runner answers calls of tool ``name``: after ``latency_ms`` of
    session time, with ``result`` (any TOML value; omitted for ``session_time`` it is the session time of
    the call), or, when ``error`` is set, as a failure with that message."""

    name: NonEmpty
    latency_ms: Millis = 50.0
    result: Any = None
    error: str | None = None


class BackgroundBehaviour(_Struct, frozen=True, kw_only=True):
    """``[[background]]``: how the scripted background reasoner answers a ``Delegate`` whose goal matches the
    regular expression ``goal`` (omitted: every goal; the first matching entry wins). After ``latency_ms``
    it publishes a final ``BackgroundUpdate`` with ``result`` and ``delivery``, or a failed one when
    ``error`` is set. ``progress`` texts, if any, go out evenly spaced before it; ``started`` announces the
    task at once."""

    goal: str | None = None
    latency_ms: Millis = 1000.0
    result: str = STANDIN_BACKGROUND_TEXT
    error: str | None = None
    delivery: Literal["interrupt", "when_idle", "silent"] = "when_idle"
    progress: list[str] = []
    started: bool = False


class WorldConfig(_Struct, frozen=True, kw_only=True):
    """``[world]``: what answers the assistant's tool calls and delegated tasks.

    ``tools = "scripted"`` (default): the scripted tool runner answers as ``[[tools]]`` says; ``"builtin"``:
    the real tool runner with the built-in tools (``session_time``, ``set_timer``, ``calculate``,
    ``search_knowledge``...; ``http_get`` refuses every host, so a run never touches the network).
    ``background = "scripted"`` (default): the scripted reasoner answers as ``[[background]]`` says;
    ``"offline"``: the real background actor with the offline planner, which calls the built-in tools (so it
    needs ``tools = "builtin"``, as in the live loop, where both share one registry). Both real parts wait on
    session time, so a run stays deterministic and replays bit for bit.

    ``tool_modules`` (with ``tools = "builtin"``): Python modules (dotted names) or ``.py`` files (relative to the
    scenario's folder) whose ``@tool`` functions join the built-in ones, as ``--tools`` does on the command line.
    Running such a scenario imports them (it is your code); replaying its recording needs them named again."""

    tools: Literal["scripted", "builtin"] = "scripted"
    background: Literal["scripted", "offline"] = "scripted"
    tool_modules: list[NonEmpty] = []


# --- the timeline ---------------------------------------------------------------------------------------------


class Event(_Struct, frozen=True, kw_only=True, tag_field="kind"):
    """One user event of the timeline. When it happens:

    - ``at``: an absolute session time in seconds;
    - ``after``: a reference (``"assistant_starts_speaking"``, ``"user:turn_end"``, ``"event:ID"``, ...; see
      :mod:`microturn.scenarios.triggers`), waiting for its ``nth`` occurrence, plus ``delay_ms`` or
      ``delay_ticks``;
    - neither: right after the previous timeline event ends (the first event: at 0).

    ``id`` names the event for ``event:ID`` references."""

    id: str | None = None
    at: NonNegative | None = None
    after: str | None = None
    delay_ms: Millis | None = None
    delay_ticks: Ticks | None = None
    nth: Nth = 1


class Say(Event, frozen=True, kw_only=True, tag="say"):
    """The user says ``text``. ``role`` sets the mark it leaves: ``turn`` (default) ends the user's turn
    (``user:turn_end`` at its end), ``partial`` continues the turn (no mark), ``backchannel`` /
    ``barge_in`` / ``noise`` mark their kind at its start, ``none`` leaves no mark. ``mode``, ``wpm`` and
    ``voice`` override ``[speech]``; ``transcript = false`` sends speech without its transcript."""

    text: NonEmpty
    role: Role = "turn"
    mode: Literal["text", "speech"] | None = None
    wpm: Wpm | None = None
    voice: NonEmpty | None = None
    transcript: bool = True


class Interrupt(Say, frozen=True, kw_only=True, tag="interrupt"):
    """The user talks over the assistant to stop it: a ``say`` whose role is ``barge_in``."""

    text: NonEmpty = "wait, stop, stop please"
    role: Role = "barge_in"


class Play(Event, frozen=True, kw_only=True, tag="play"):
    """Play a PCM16 WAV file (``path`` relative to the scenario file) in 200 ms pieces; ``transcript``, if
    given, arrives in the last piece's window; ``role`` as for ``say`` (default ``none``)."""

    path: NonEmpty
    transcript: str | None = None
    role: Role = "none"


class Image(Event, frozen=True, kw_only=True, tag="image"):
    """Show an image: a PNG/JPEG file (``path``), or a generated RGB test image ``pattern`` of
    ``width`` x ``height`` pixels; a ``solid`` one is filled with ``color`` (R, G, B; default mid grey)."""

    path: str | None = None
    pattern: Literal["checker", "gradient", "solid"] = "checker"
    color: tuple[Byte, Byte, Byte] = (128, 128, 128)
    width: Annotated[int, msgspec.Meta(ge=1, le=1280)] = 80
    height: Annotated[int, msgspec.Meta(ge=1, le=1280)] = 80


class Silence(Event, frozen=True, kw_only=True, tag="silence"):
    """The user stays silent for ``duration`` seconds (a spacer for the events that follow it)."""

    duration: Positive


class Pause(Event, frozen=True, kw_only=True, tag="pause"):
    """A pause inside the user's turn: ``user:pause`` at its start, ``user:pause_end`` after ``duration``."""

    duration: Positive


class Noise(Event, frozen=True, kw_only=True, tag="noise"):
    """A burst of white noise (``microturn.audio.noise``) of ``duration`` s at RMS ``level``; marks
    ``user:noise`` at its start (``role = "none"``: no mark)."""

    duration: Positive = 0.3
    level: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.1
    seed: NonNegativeInt = 0
    role: Literal["noise", "none"] = "noise"


class Cough(Noise, frozen=True, kw_only=True, tag="cough"):
    """A cough: a short noise burst with a sharp attack and a fast decay."""

    duration: Positive = 0.25
    level: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.3


class MarkEvent(Event, frozen=True, kw_only=True, tag="mark"):
    """Publish ``Mark(name="mark:NAME")`` (for expectations, triggers and the report)."""

    name: Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[A-Za-z0-9_.:\-]+$")]


AnyEvent = Union[Say, Interrupt, Play, Image, Silence, Pause, Noise, Cough, MarkEvent]
EVENT_KINDS = {cls.__struct_config__.tag: cls for cls in AnyEvent.__args__}  # type: ignore[attr-defined]
"""Each timeline event class by its ``kind``."""


# --- expectations --------------------------------------------------------------------------------------------


class Expectation(_Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Something the session must show. ``name`` defaults to a description of the expectation."""

    name: str | None = None


class _Budget(Expectation, frozen=True, kw_only=True):
    budget_ms: Millis | None = None
    budget_ticks: Ticks | None = None

    @property
    def budget(self) -> float:
        """The budget in seconds."""
        if self.budget_ms is not None:
            return self.budget_ms / 1000
        return (self.budget_ticks or 0) * TICK_PERIOD


class RespondsWithin(_Budget, frozen=True, kw_only=True, tag="responds_within"):
    """The assistant starts speaking (its first word is heard; backchannels do not count) within the budget
    after the ``nth`` occurrence of ``after``."""

    after: Reference = "user:turn_end"
    nth: Nth = 1


class SilentBetween(Expectation, frozen=True, kw_only=True, tag="silent_between"):
    """No assistant word is heard between ``start`` and ``end`` (references or seconds); backchannels are
    allowed unless ``backchannels = false``."""

    start: Reference
    end: Reference
    backchannels: bool = True


class StopsWithin(_Budget, frozen=True, kw_only=True, tag="stops_within"):
    """The utterance playing at ``after`` (default the barge-in) stops sounding within the budget."""

    after: Reference = "user:barge_in"
    nth: Nth = 1


class KeepsSpeaking(Expectation, frozen=True, kw_only=True, tag="keeps_speaking"):
    """The utterance playing at ``after`` (default a user backchannel) is not cut: it completes."""

    after: Reference = "user:backchannel"
    nth: Nth = 1


class HeardWithin(_Budget, frozen=True, kw_only=True, tag="heard_within"):
    """The words of the ``nth`` background result start to be heard within the budget of its arrival."""

    after: Reference = "background_result"
    nth: Nth = 1


class Says(Expectation, frozen=True, kw_only=True, tag="says"):
    """Some assistant utterance, as heard, matches the regular expression ``pattern`` (searched,
    case-insensitive unless the pattern says otherwise). With ``start`` and/or ``end`` (references or
    seconds) only utterances whose first word is heard in [start, end) count: "says X while the user is still
    speaking", "the reminder is heard in the second after it is due"."""

    pattern: NonEmpty
    start: Reference | None = None
    end: Reference | None = None


class DoesNotSay(Says, frozen=True, kw_only=True, tag="does_not_say"):
    """No assistant utterance, as heard (first heard in [start, end) when they are given), matches
    ``pattern``."""


class ToolCalled(Expectation, frozen=True, kw_only=True, tag="tool_called"):
    """The assistant called ``tool`` (omitted: any tool)."""

    tool: str | None = None


class NoToolCalled(ToolCalled, frozen=True, kw_only=True, tag="no_tool_called"):
    """The assistant called no tool (or not ``tool``)."""


class Judged(Expectation, frozen=True, kw_only=True, tag="judged"):
    """A ``criterion`` in plain words ("the assistant apologised and offered another time"), decided by an
    OpenAI-compatible chat model reading the conversation as the user heard it (see
    :mod:`microturn.scenarios.judge`). The verdict goes into the recording; with no judge configured the
    expectation is *not judged*, never passed."""

    criterion: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


AnyExpectation = Union[
    RespondsWithin, SilentBetween, StopsWithin, KeepsSpeaking, HeardWithin, Says, DoesNotSay, ToolCalled, NoToolCalled,
    Judged,
]
EXPECTATION_KINDS = {cls.__struct_config__.tag: cls for cls in AnyExpectation.__args__}  # type: ignore[attr-defined]
"""Each expectation class by its ``kind``."""


# --- the scenario --------------------------------------------------------------------------------------------


class Scenario(_Struct, frozen=True, kw_only=True):
    """A whole scenario. ``name`` defaults to the file's stem; ``duration`` is the session time to run, in
    seconds; ``dialog`` overrides dialog-state timings in seconds (``microturn.assembly.DIALOG_TIMINGS``
    names them). Paths in events are absolute once loaded (resolved against the scenario's folder)."""

    name: str = ""
    description: str = ""
    category: NonEmpty = "uncategorized"
    tags: list[str] = []
    duration: Positive = 10.0
    model: ModelConfig = ModelConfig()
    speech: SpeechConfig = SpeechConfig()
    world: WorldConfig = WorldConfig()
    dialog: dict[str, Positive] = {}
    timeline: list[AnyEvent] = []
    tools: list[ToolBehaviour] = []
    background: list[BackgroundBehaviour] = []
    expect: list[AnyExpectation] = []


# --- loading --------------------------------------------------------------------------------------------------


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read, decode and validate a scenario file; relative paths inside it are resolved against its folder."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_SCENARIO_BYTES + 1)  # never more than the cap, and one byte to tell it is over
    except FileNotFoundError:
        raise ScenarioError("no such scenario file", file=p) from None
    except OSError as exc:
        raise ScenarioError(f"cannot read the scenario file: {exc.strerror}", file=p) from None
    return loads_scenario(data, file=p, base_dir=p.parent, default_name=p.stem)


def loads_scenario(
    data: bytes | str,
    *,
    file: str | os.PathLike[str] = "<scenario>",
    base_dir: str | os.PathLike[str] | None = None,
    default_name: str = "scenario",
) -> Scenario:
    """Decode and validate scenario TOML text (``file`` only names it in errors)."""
    raw_bytes = data.encode() if isinstance(data, str) else bytes(data)
    if len(raw_bytes) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"the file is over {MAX_SCENARIO_BYTES} bytes, the most a scenario may be", file=file)
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=file) from None
    _check_nesting(text, file)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(found.group(1)) if found else None
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise ScenarioError(f"invalid TOML: {reason}", file=file, line=line) from None
    except RecursionError:  # the scan above should make this unreachable; it must never escape as a traceback
        raise ScenarioError(f"tables or arrays nest deeper than {MAX_DEPTH} levels", file=file) from None
    try:
        check_limits(raw)  # dotted keys (a.b.c... = 1) nest without brackets, so the parsed tree is checked too
    except ScenarioError as exc:
        raise exc.located(file, _locate(text, exc.key) if exc.key else None) from None
    try:
        # what msgspec.toml.decode does after parsing, here on a tree that has passed the limits
        scenario = msgspec.convert(
            raw, Scenario, builtin_types=(datetime.datetime, datetime.date, datetime.time), str_keys=True
        )
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, text, file) from None
    if not scenario.name:
        scenario = msgspec.structs.replace(scenario, name=default_name)
    try:
        return validate(scenario, base_dir=base_dir)
    except ScenarioError as exc:
        raise exc.located(file, _locate(text, exc.key) if exc.key else None) from None


def validate(
    scenario: Scenario, *, base_dir: str | os.PathLike[str] | None = None, check_types: bool = False
) -> Scenario:
    """Check what the types alone cannot (references, exclusive keys, files, patterns) and return the scenario
    with its file paths made absolute. ``check_types`` also checks every field's type and range, which
    constructing Structs in Python does not (decoding a file does). Raises :class:`ScenarioError` naming the
    key and value."""
    check_limits(scenario)
    if check_types:
        scenario = _checked(scenario)

    base = Path(base_dir) if base_dir is not None else Path.cwd()
    ids: dict[str, int] = {}
    for i, event in enumerate(scenario.timeline):
        if event.id is not None:
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+", event.id):
                raise ScenarioError("an event id may hold letters, digits, '_', '.' and '-'", key=f"timeline[{i}].id",
                                    value=event.id)
            if event.id in ids:
                raise ScenarioError(f"duplicate event id (also timeline[{ids[event.id]}])", key=f"timeline[{i}].id",
                                    value=event.id)
            ids[event.id] = i
    marks = {f"mark:{e.name}" for e in scenario.timeline if isinstance(e, MarkEvent)}

    events = []
    for i, event in enumerate(scenario.timeline):
        key = f"timeline[{i}]"
        if event.at is not None and event.after is not None:
            raise ScenarioError("give either 'at' (seconds) or 'after' (a reference), not both", key=f"{key}.after",
                                value=event.after)
        if event.delay_ms is not None and event.delay_ticks is not None:
            raise ScenarioError("give either 'delay_ms' or 'delay_ticks', not both", key=f"{key}.delay_ticks",
                                value=event.delay_ticks)
        if event.after is None and (event.delay_ms is not None or event.delay_ticks is not None or event.nth != 1):
            field = "nth" if event.nth != 1 else ("delay_ms" if event.delay_ms is not None else "delay_ticks")
            raise ScenarioError("'delay_ms', 'delay_ticks' and 'nth' need 'after'", key=f"{key}.{field}",
                                value=getattr(event, field))
        if event.after is not None:
            problem = check_reference(event.after, event_ids=ids, marks=marks, nth=event.nth)
            if problem:
                raise ScenarioError(problem, key=f"{key}.after", value=event.after)
        if isinstance(event, (Play, Image)) and event.path is not None:
            resolved = (base / event.path).resolve() if not os.path.isabs(event.path) else Path(event.path)
            if not resolved.is_file():
                raise ScenarioError(f"no such file ({resolved})", key=f"{key}.path", value=event.path)
            if isinstance(event, Image) and resolved.suffix.lower() not in (".png", ".jpg", ".jpeg"):
                raise ScenarioError("an image file must be .png, .jpg or .jpeg", key=f"{key}.path", value=event.path)
            event = msgspec.structs.replace(event, path=str(resolved))
        events.append(event)
    _check_cycles(events, ids)

    for name, seconds in scenario.dialog.items():
        problem = dialog_timing_problem(name, seconds)
        if problem:
            raise ScenarioError(problem, key=f"dialog.{name}", value=seconds)

    world = scenario.world
    if world.tools != "scripted" and scenario.tools:
        raise ScenarioError(f"[[tools]] scripts the scripted tool runner; with world.tools = {world.tools!r} the "
                            "real tools answer: drop one of them", key="tools[0].name", value=scenario.tools[0].name)
    if world.background != "scripted" and scenario.background:
        raise ScenarioError(f"[[background]] scripts the scripted reasoner; with world.background = "
                            f"{world.background!r} the real one answers: drop one of them", key="background[0]")
    if world.tool_modules and world.tools != "builtin":
        raise ScenarioError('tool modules join the built-in tools: they need world.tools = "builtin"',
                            key="world.tool_modules", value=world.tool_modules)
    modules = [resolve_module_spec(m, base) for m in world.tool_modules]
    for i, (given, module) in enumerate(zip(world.tool_modules, modules, strict=True)):
        if is_file_spec(given) and not Path(module).is_file():
            raise ScenarioError(f"no such file ({module})", key=f"world.tool_modules[{i}]", value=given)
    if modules != world.tool_modules:
        scenario = msgspec.structs.replace(scenario, world=msgspec.structs.replace(world, tool_modules=modules))
    if world.background == "offline" and world.tools != "builtin":
        raise ScenarioError('the offline planner calls the built-in tools: it needs world.tools = "builtin"',
                            key="world.background", value=world.background)
    for i, tool in enumerate(scenario.tools):
        if any(t.name == tool.name for t in scenario.tools[:i]):
            raise ScenarioError("tool declared twice", key=f"tools[{i}].name", value=tool.name)
    for i, behaviour in enumerate(scenario.background):
        if behaviour.goal is not None:
            _check_regex(behaviour.goal, f"background[{i}].goal")

    for i, expectation in enumerate(scenario.expect):
        key = f"expect[{i}]"
        if isinstance(expectation, _Budget):
            if expectation.budget_ms is None and expectation.budget_ticks is None:
                raise ScenarioError("a budget is required: give 'budget_ms' or 'budget_ticks'", key=f"{key}.budget_ms")
            if expectation.budget_ms is not None and expectation.budget_ticks is not None:
                raise ScenarioError("give either 'budget_ms' or 'budget_ticks', not both", key=f"{key}.budget_ticks",
                                    value=expectation.budget_ticks)
        for field in ("after", "start", "end"):
            ref = getattr(expectation, field, None)
            if isinstance(ref, str):
                nth = getattr(expectation, "nth", 1) if field == "after" else 1
                problem = check_reference(ref, event_ids=ids, marks=marks, nth=nth)
                if problem:
                    raise ScenarioError(problem, key=f"{key}.{field}", value=ref)
        if (
            isinstance(expectation, (SilentBetween, Says))
            and isinstance(expectation.start, float)
            and isinstance(expectation.end, float)
            and expectation.end < expectation.start
        ):
            raise ScenarioError("'end' is before 'start'", key=f"{key}.end", value=expectation.end)
        if isinstance(expectation, Says):
            _check_regex(expectation.pattern, f"{key}.pattern")
    return msgspec.structs.replace(scenario, timeline=events)


def _checked(scenario: Scenario) -> Scenario:
    """The scenario decoded again from its own plain data, so msgspec enforces every type and constraint."""
    try:
        data = msgspec.to_builtins(scenario)
    except TypeError as exc:
        raise ScenarioError(f"not plain data: {exc}") from None
    try:
        return msgspec.convert(data, Scenario)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = _REASON_PATH.search(message)
        path = found.group(1).lstrip(".") if found else ""
        reason = message[: found.start()] if found else message
        value: Any = ScenarioError._UNSET
        try:
            value = _value_at(data, path)
        except (KeyError, IndexError, TypeError):
            pass
        raise ScenarioError(reason, key=path or None, value=value) from None


def _check_regex(pattern: str, key: str) -> None:
    problem = pattern_problem(pattern)
    if problem:
        raise ScenarioError(problem, key=key, value=pattern)


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` may not be used as a scenario's regular expression, or None when it may.

    Besides syntax and length (:data:`MAX_PATTERN_CHARS`), patterns that can backtrack catastrophically are
    refused: a quantifier over something that itself holds a quantifier (``(a+)+``, ``(\\w+\\s?)*``), and a
    quantifier over alternatives that can begin with the same character (``(a|ab)+``). The check is on the
    parsed pattern, so it says the same on every machine (a time limit would make a verdict depend on the
    machine's speed). Possessive quantifiers (``a++``) and atomic groups (``(?>...)``) never backtrack and are
    allowed anywhere."""
    if not isinstance(pattern, str):
        return f"a regular expression must be a string, not {type(pattern).__name__}"
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"a regular expression of {len(pattern)} characters; at most {MAX_PATTERN_CHARS} are allowed"
    try:
        re.compile(pattern)
        parsed = _sre_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"not a valid regular expression ({exc})"
    found = _backtracking(parsed, inside_repeat=False)
    if found:
        return (f"the pattern can backtrack catastrophically ({found}); rewrite it, or use a possessive "
                "quantifier (a++) or an atomic group ((?>...))")
    return None


def _repeat_body(op: Any, av: Any) -> Any:
    """The body of a backtracking quantifier that can match more than once, else None."""
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and (av[1] is _sre.MAXREPEAT or av[1] > 1):
        return av[2]
    return None


def _children(op: Any, av: Any) -> list[Any]:
    """The sub-patterns of one parsed item; atomic groups and possessive repeats are left out (they never
    backtrack, so nothing inside them can blow up)."""
    if op is _sre.SUBPATTERN:
        return [av[3]]
    if op is _sre.BRANCH:
        return list(av[1])
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
        return [av[2]]
    if op in (_sre.ASSERT, _sre.ASSERT_NOT):
        return [av[1]]
    if op is _sre.GROUPREF_EXISTS:
        return [p for p in av[1:] if p is not None]
    return []


def _backtracking(items: Any, *, inside_repeat: bool) -> str | None:
    for op, av in items:
        body = _repeat_body(op, av)
        if body is not None and inside_repeat:
            return "a quantifier inside a quantified group"
        if op is _sre.BRANCH and inside_repeat:
            # a branch that can match nothing overlaps every other (the parser factors "a|ab" into "a(?:|b)")
            firsts = [None if _nullable(branch) else _first_chars(branch) for branch in av[1]]
            for i, a in enumerate(firsts):
                for b in firsts[i + 1 :]:
                    if a is None or b is None or a & b:
                        return "alternatives that can start alike inside a quantified group"
        for child in _children(op, av):
            found = _backtracking(child, inside_repeat=inside_repeat or body is not None)
            if found:
                return found
    return None


def _nullable(items: Any) -> bool:
    """Whether ``items`` can match the empty string."""
    for op, av in items:
        if op in (_sre.AT, _sre.ASSERT, _sre.ASSERT_NOT):
            continue
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            if av[0] == 0 or _nullable(av[2]):
                continue
            return False
        if op is _sre.SUBPATTERN:
            if _nullable(av[3]):
                continue
            return False
        if op is _sre.BRANCH:
            if any(_nullable(branch) for branch in av[1]):
                continue
            return False
        return False
    return True


def _first_chars(items: Any) -> set[str] | None:
    """The characters a match of ``items`` can begin with (lower-cased), or None for "too many to say"."""
    out: set[str] = set()
    for op, av in items:
        if op is _sre.LITERAL:
            return out | {chr(av).lower()}
        if op is _sre.IN:
            chars: set[str] = set()
            for kind, value in av:
                if kind is _sre.LITERAL:
                    chars.add(chr(value).lower())
                elif kind is _sre.RANGE and value[1] - value[0] < 256:
                    chars.update(chr(c).lower() for c in range(value[0], value[1] + 1))
                else:  # a negated set, a category (\w, \d), a wide range
                    return None
            return out | chars
        if op in (_sre.AT, _sre.ASSERT, _sre.ASSERT_NOT):
            continue  # zero width: the next item begins the match
        if op is _sre.SUBPATTERN:
            inner = _first_chars(av[3])
            return None if inner is None else out | inner
        if op is _sre.BRANCH:
            for branch in av[1]:
                inner = _first_chars(branch)
                if inner is None:
                    return None
                out |= inner
            return out
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            inner = _first_chars(av[2])
            if inner is None:
                return None
            out |= inner
            if av[0] == 0:
                continue  # it may match nothing, so what follows can begin the match too
            return out
        return None  # any character, a category, a back-reference...
    return out


def check_limits(root: Any, key: str = "") -> None:
    """Refuse a scenario (raw TOML data, or Structs built in Python) that nests deeper than
    :data:`MAX_DEPTH`, holds a string longer than :data:`MAX_STRING_CHARS`, a list or table of more than
    :data:`MAX_ITEMS` entries, or more than :data:`MAX_VALUES` values in all. Iterative, so a deep tree
    cannot exhaust the stack; raises :class:`ScenarioError` naming the key."""
    stack: list[tuple[Any, str, int]] = [(root, key, 0)]
    count = 0
    while stack:
        value, path, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ScenarioError(f"more than {MAX_VALUES} values in one scenario", key=path or None)
        if depth > MAX_DEPTH:
            raise ScenarioError(f"nested deeper than {MAX_DEPTH} levels", key=path or None)
        if isinstance(value, str):
            if len(value) > MAX_STRING_CHARS:
                raise ScenarioError(f"a string of {len(value)} characters; at most {MAX_STRING_CHARS} are allowed",
                                    key=path or None, value=value)
        elif isinstance(value, msgspec.Struct):
            fields = [(name, getattr(value, name)) for name in value.__struct_fields__]
            stack.extend((v, f"{path}.{name}" if path else name, depth + 1) for name, v in fields)
        elif isinstance(value, dict):
            if len(value) > MAX_ITEMS:
                raise ScenarioError(f"a table of {len(value)} keys; at most {MAX_ITEMS} are allowed", key=path or None)
            for name, v in value.items():
                name = str(name)
                if len(name) > MAX_STRING_CHARS:
                    raise ScenarioError(f"a key of {len(name)} characters; at most {MAX_STRING_CHARS} are allowed",
                                        key=path or None, value=name)
                stack.append((v, f"{path}.{name}" if path else name, depth + 1))
        elif isinstance(value, (list, tuple)):
            if len(value) > MAX_ITEMS:
                raise ScenarioError(f"a list of {len(value)} entries; at most {MAX_ITEMS} are allowed",
                                    key=path or None)
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))


_NESTING_TOKEN = re.compile(r"\"\"\"|'''|[\"'#\[\]{}\n\\]")


def _check_nesting(text: str, file: str | os.PathLike[str]) -> None:
    """Refuse TOML whose arrays and inline tables nest deeper than :data:`MAX_DEPTH`, from the raw text: the
    TOML parser recurses once per level, so 5000 levels would exhaust the stack before any check on the
    parsed tree. Brackets in strings and comments do not count; what is not valid TOML is left for the parser
    to report."""
    depth = 0
    state = ""  # the string or comment being read: '"', "'", '"""', "'''", "#"; "" outside them
    pos = 0
    while (found := _NESTING_TOKEN.search(text, pos)) is not None:
        token = found.group()
        pos = found.end()
        if state in ('"', '"""'):
            if token == "\\":
                pos += 1  # an escape: the next character cannot end the string
            elif token == state or (state == '"' and token == "\n"):
                state = ""
        elif state in ("'", "'''"):
            if token == state or (state == "'" and token == "\n"):
                state = ""
        elif state == "#":
            if token == "\n":
                state = ""
        elif token in ('"', "'", '"""', "'''", "#"):
            state = token
        elif token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, found.start()) + 1
                raise ScenarioError(f"tables or arrays nest deeper than {MAX_DEPTH} levels", file=file, line=line)
        elif token in "]}":
            depth = max(0, depth - 1)


def _check_cycles(events: list[Any], ids: dict[str, int]) -> None:
    """``event:ID`` references must not go round in a circle (nothing would ever start)."""
    def target(i: int) -> int | None:
        after = events[i].after
        if after is None:
            return i - 1 if i > 0 and events[i].at is None else None
        ref = parse_reference(after)
        return ids.get(ref.event_id) if ref.event_id is not None else None

    for start in range(len(events)):
        seen = {start}
        j = target(start)
        while j is not None:
            if j in seen:
                raise ScenarioError("event references go round in a circle", key=f"timeline[{start}].after",
                                    value=events[start].after)
            seen.add(j)
            j = target(j)


# --- encoding (for recordings and replay) -------------------------------------------------------------------


def encode_scenario(scenario: Scenario) -> dict[str, Any]:
    """The scenario as plain data (what a recording's header carries)."""
    return msgspec.to_builtins(scenario)


def decode_scenario(data: dict[str, Any]) -> Scenario:
    """The inverse of :func:`encode_scenario`."""
    try:
        return msgspec.convert(data, Scenario)
    except msgspec.ValidationError as exc:
        found = re.search(r" - at `\$\.?([^`]*)`$", str(exc))
        raise ScenarioError(str(exc).split(" - at ")[0], key=found.group(1) if found else None) from None


# --- error locations ------------------------------------------------------------------------------------------

_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'))*)\s*=""")
_PATH_STEP = re.compile(r"\.?([A-Za-z0-9_\-]+)|\[(\d+)\]")
_REASON_PATH = re.compile(r"\s+-\s+at\s+`\$([^`]*)`$")


def _dotted(name: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in re.split(r"\.(?=(?:[^\"']|\"[^\"]*\"|'[^']*')*$)", name))


def _key_lines(text: str) -> dict[str, int]:
    """Best effort: the line of each key path (``timeline[2].at``) and table header in TOML text."""
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}
    prefix = ""
    for number, line in enumerate(text.splitlines(), 1):
        if found := _ARRAY_TABLE.match(line):
            name = _dotted(found.group(1))
            index = counts.get(name, 0)
            counts[name] = index + 1
            prefix = f"{name}[{index}]"
            lines.setdefault(prefix, number)
        elif found := _TABLE.match(line):
            prefix = _dotted(found.group(1))
            lines.setdefault(prefix, number)
        elif found := _KEY.match(line):
            key = _dotted(found.group(1))
            lines.setdefault(f"{prefix}.{key}" if prefix else key, number)
    return lines


def _locate(text: str, key: str | None) -> int | None:
    """The line of ``key`` in ``text``, or of the nearest enclosing key or table that is found."""
    if not key:
        return None
    lines = _key_lines(text)
    path = key
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def _value_at(raw: Any, path: str) -> Any:
    value = raw
    for step in _PATH_STEP.finditer(path):
        name, index = step.group(1), step.group(2)
        if name is not None:
            value = value[name]
        else:
            value = value[int(index)]
    return value


def _validation_error(exc: msgspec.ValidationError, text: str, file: str | os.PathLike[str]) -> ScenarioError:
    """msgspec's ``... - at `$.timeline[3].at``` made into file, line, key and value."""
    message = str(exc)
    found = _REASON_PATH.search(message)
    path = found.group(1).lstrip(".") if found else ""
    reason = message[: found.start()] if found else message
    value: Any = ScenarioError._UNSET
    try:
        raw: Any = tomllib.loads(text)
    except tomllib.TOMLDecodeError:  # msgspec decoded it, so this should not happen; the reason still stands
        raw = {}
    if unknown := re.match(r"Object contains unknown field `([^`]+)`", reason):
        path = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        reason = "unknown key" + _known_keys(path, raw)
    elif missing := re.match(r"Object missing required field `([^`]+)`", reason):
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        reason = "missing required key" + (_known_kinds(path) if missing.group(1) == "kind" else "")
    elif path.endswith(".kind") and reason.startswith("Invalid value"):
        reason = "unknown kind" + _known_kinds(path)
    if value is ScenarioError._UNSET and not reason.startswith("missing"):
        try:
            value = _value_at(raw, path)
        except (KeyError, IndexError, TypeError):
            value = ScenarioError._UNSET
    if isinstance(value, float) and math.isnan(value):
        value = "nan"
    return ScenarioError(reason, file=file, line=_locate(text, path), key=path or None, value=value)


def _known_kinds(path: str) -> str:
    if path.startswith("timeline"):
        return f"; known: {', '.join(EVENT_KINDS)}"
    if path.startswith("expect"):
        return f"; known: {', '.join(EXPECTATION_KINDS)}"
    return ""


def _known_keys(path: str, raw: Any) -> str:
    """The keys allowed where an unknown one was found (for the error message)."""
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    cls: Any = Scenario
    if parent:
        top = re.match(r"([A-Za-z_]+)", parent)
        name = top.group(1) if top else ""
        tables = {"model": ModelConfig, "speech": SpeechConfig, "world": WorldConfig, "tools": ToolBehaviour,
                  "background": BackgroundBehaviour}
        cls = tables.get(name)
        if name in ("timeline", "expect"):
            try:
                kind = _value_at(raw, parent).get("kind")
            except (KeyError, IndexError, TypeError, AttributeError):
                kind = None
            cls = (EVENT_KINDS if name == "timeline" else EXPECTATION_KINDS).get(kind)
        if cls is None or parent.count(".") or parent.count("[") > 1:
            return ""
    return f"; known: {', '.join(cls.__struct_fields__)}"
