"""The scenario format: a TOML file decoded with msgspec into typed, frozen Structs.

A scenario holds its metadata and tags, the model backend and its options, a timeline of user events (each at
an absolute time or relative to something observed in the session), the scripted behaviour of tools and of
the background reasoner, and expectations with budgets in ms or ticks. :func:`load_scenario` reads a file;
:mod:`microturn.scenarios.builder` builds the same Structs from Python. Both end in :func:`validate`, so a
scenario is checked the same way however it was written.

Every problem raises :class:`ScenarioError`, which names the file, the line (when it can be found), the key
(e.g. ``timeline[2].after``) and the offending value.

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

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import msgspec

from microturn.assembly import dialog_timing_problem
from microturn.runtime import MicroturnError

from .references import check_reference, parse_reference

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
]

TICK_PERIOD = 0.2
"""Seconds per micro-turn in every scenario session (``delay_ticks`` and ``budget_ticks`` count these)."""

STANDIN_BACKGROUND_TEXT = "I have no background reasoner yet, so I cannot look that up."
"""What the default background double answers (the demo stand-in's words)."""

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
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
    latency_ms: NonNegative = 50.0
    result: Any = None
    error: str | None = None


class BackgroundBehaviour(_Struct, frozen=True, kw_only=True):
    """``[[background]]``: how the scripted background reasoner answers a ``Delegate`` whose goal matches the
    regular expression ``goal`` (omitted: every goal; the first matching entry wins). After ``latency_ms``
    it publishes a final ``BackgroundUpdate`` with ``result`` and ``delivery``, or a failed one when
    ``error`` is set. ``progress`` texts, if any, go out evenly spaced before it; ``started`` announces the
    task at once."""

    goal: str | None = None
    latency_ms: NonNegative = 1000.0
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
    delay_ms: NonNegative | None = None
    delay_ticks: NonNegativeInt | None = None
    nth: PositiveInt = 1


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
    budget_ms: NonNegative | None = None
    budget_ticks: NonNegativeInt | None = None

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
    nth: PositiveInt = 1


class SilentBetween(Expectation, frozen=True, kw_only=True, tag="silent_between"):
    """No assistant word is heard between ``start`` and ``end`` (references or seconds); backchannels are
    allowed unless ``backchannels = false``."""

    start: Reference
    end: Reference
    backchannels: bool = True


class StopsWithin(_Budget, frozen=True, kw_only=True, tag="stops_within"):
    """The utterance playing at ``after`` (default the barge-in) stops sounding within the budget."""

    after: Reference = "user:barge_in"
    nth: PositiveInt = 1


class KeepsSpeaking(Expectation, frozen=True, kw_only=True, tag="keeps_speaking"):
    """The utterance playing at ``after`` (default a user backchannel) is not cut: it completes."""

    after: Reference = "user:backchannel"
    nth: PositiveInt = 1


class HeardWithin(_Budget, frozen=True, kw_only=True, tag="heard_within"):
    """The words of the ``nth`` background result start to be heard within the budget of its arrival."""

    after: Reference = "background_result"
    nth: PositiveInt = 1


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
    duration: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
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
        data = p.read_bytes()
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
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=file) from None
    try:
        scenario = msgspec.toml.decode(raw_bytes, type=Scenario)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, text, file) from None
    except msgspec.DecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(found.group(1)) if found else None
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise ScenarioError(f"invalid TOML: {reason}", file=file, line=line) from None
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
    modules = [_resolve_module(m, base) for m in world.tool_modules]
    for i, (given, module) in enumerate(zip(world.tool_modules, modules, strict=True)):
        if (module != given or Path(module).is_absolute()) and not Path(module).is_file():
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


def _resolve_module(spec: str, base: Path) -> str:
    """A tool module named by file path is made absolute (against the scenario's folder); a dotted name stays."""
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        return str((base / Path(spec).expanduser()).resolve())
    return spec


def _check_regex(pattern: str, key: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ScenarioError(f"not a valid regular expression ({exc})", key=key, value=pattern) from None


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
