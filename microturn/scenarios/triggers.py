"""When timeline events happen, and what they send.

**References** name things that happen in a session. Events use them in ``after``; expectations in ``after``,
``start`` and ``end``. ``NAME#N`` (or ``nth = N``) means the N-th occurrence, counted from the session start.

=============================  ========================================================================
``start``                      the session start (time 0; once)
``assistant_starts_speaking``  ``SpeechStarted`` of an utterance that is not a backchannel
``assistant_backchannels``     ``SpeechStarted`` of a backchannel utterance (flagged by its first chunk)
``assistant_stops_speaking``   ``SpeechEnded`` (completed or interrupted) of a non-backchannel utterance
``dialog:STATE``               ``DialogState.user`` becomes STATE (``speaking``, ``pausing``, ``thinking``,
                               ``yielding``, ``inviting``, ``interrupting``, ``away``)
``user:KIND``                  the scenario's ``Mark`` of a user event (``USER_EVENT_MARKS``)
``mark:NAME``                  the ``Mark`` published by the timeline's ``mark`` event NAME
``tool_called``                a ``ToolCall``;  ``tool_result``: a ``ToolResult``
``delegated``                  a ``Delegate``; ``background_result``: a final or failed ``BackgroundUpdate``
``event:ID``                   the end of timeline event ID; ``event:ID:start``: its start (once each)
=============================  ========================================================================

**Trigger semantics.** An event whose reference occurs at session time t starts at t + delay. The
:class:`Director` watches the bus through a tap and, as the occurrence is published, schedules the event's
messages with ``Session.schedule``: in lockstep they land at fixed points (a scheduled input comes after the
tick of its instant and before actor timers), so the run is a function of the scenario alone, and a
recording replays them from their recorded times. Two rules make that exact:

- a follow-up never lands at the very instant of what it follows: a zero delay starts it 1 µs later, so it
  is an input at a later instant (replay schedules inputs before any actor timer of the same instant, and
  the follow-up of something an actor timer published must not overtake that timer);
- a time within 1 ns of a tick boundary snaps to the clock's own deadline (``period * k``), so ``at = 1.4``
  or ``1.2 + 0.2`` both mean "the start of window 7", whatever the float rounding.

An event that follows another (``event:ID``, or no ``at``/``after``: the previous event's end) is scheduled
as soon as that one's start is known, since every event's duration is known in advance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from microturn.messages import (
    BackgroundUpdate,
    Delegate,
    DialogState,
    Message,
    OutputChunk,
    SpeechEnded,
    SpeechStarted,
    ToolCall,
    ToolResult,
    UserAudio,
    UserImage,
    UserText,
)
from microturn.messages import Mark as MarkMessage

from .format import (
    TICK_PERIOD,
    Cough,
    Image,
    Interrupt,
    MarkEvent,
    Noise,
    Pause,
    Play,
    Say,
    Scenario,
    ScenarioError,
    Silence,
)
from .references import REFERENCES, USER_STATES, Reference, check_reference, parse_reference

__all__ = [
    "REFERENCES",
    "USER_STATES",
    "Reference",
    "parse_reference",
    "check_reference",
    "Occurrences",
    "Plan",
    "prepare_plans",
    "Director",
    "Fired",
    "EPSILON",
    "snap",
]

EPSILON = 1e-6
"""How much later than its cause a zero-delay follow-up starts (seconds)."""
_SNAP = 1e-9
_SILENCE_LEVEL = 300  # int16 magnitude under which espeak's lead-in and tail count as silence


def snap(t: float, period: float = TICK_PERIOD) -> float:
    """``t``, or the clock's deadline float ``period * k`` when ``t`` is within 1 ns of it."""
    k = round(t / period)
    boundary = period * k
    return boundary if abs(t - boundary) < _SNAP else t


# --- occurrences ----------------------------------------------------------------------------------------------


class Occurrences:
    """Classifies a session's messages, in bus order, into reference occurrences. The director (online, as a
    tap) and the expectations (offline, over a recording) use this same class, so they agree."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.times["start"].append(0.0)
        self._starting: dict[int, tuple[int, float]] = {}  # generation -> (utterance id, SpeechStarted time)
        self._backchannels: set[int] = set()
        self._user: str | None = None

    def feed(self, message: Message) -> list[tuple[str, float]]:
        """Record the occurrences ``message`` makes; return them as (name, time)."""
        stamp = message.stamp
        t = stamp.time if stamp is not None else 0.0
        found: list[tuple[str, float]] = []
        match message:
            case MarkMessage(name=name):
                found.append((name, t))
            case SpeechStarted(utterance_id=uid, generation=g):
                self._starting[g] = (uid, t)  # backchannel or not: its first chunk, next on the bus, tells
            case OutputChunk(generation=g, controls=controls) if g in self._starting:
                uid, started = self._starting.pop(g)
                if "backchannel" in controls:
                    self._backchannels.add(uid)
                    found.append(("assistant_backchannels", started))
                else:
                    found.append(("assistant_starts_speaking", started))
            case SpeechEnded(utterance_id=uid):
                if uid in self._backchannels:
                    self._backchannels.discard(uid)
                else:
                    found.append(("assistant_stops_speaking", t))
            case DialogState(user=user):
                if user != self._user:
                    self._user = user
                    found.append((f"dialog:{user}", t))
            case ToolCall():
                found.append(("tool_called", t))
            case ToolResult():
                found.append(("tool_result", t))
            case Delegate():
                found.append(("delegated", t))
            case BackgroundUpdate(status=status) if status in ("final", "failed"):
                found.append(("background_result", t))
        for name, when in found:
            self.times[name].append(when)
        return found

    def time_of(self, name: str, nth: int = 1) -> float | None:
        """The session time of the ``nth`` occurrence of ``name`` (None if it did not happen)."""
        times = self.times.get(name, [])
        return times[nth - 1] if len(times) >= nth else None


# --- what each event sends --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What timeline event ``index`` sends, as offsets (seconds from its start) and messages, and how long it
    lasts; ``label`` describes it for the timeline."""

    index: int
    label: str
    duration: float
    items: tuple[tuple[float, Message], ...] = ()


def _pieces(pcm: bytes, bytes_per_piece: int) -> list[bytes]:
    return [pcm[i : i + bytes_per_piece] for i in range(0, len(pcm), bytes_per_piece)]


def _audio_items(pcm: bytes, rate: int, channels: int, period: float) -> tuple[list[tuple[float, Message]], float]:
    """PCM16 in one ``UserAudio`` per tick period, each at its window's offset; and the audio's duration."""
    piece = round(period * rate) * 2 * channels
    items: list[tuple[float, Message]] = [
        (i * period, UserAudio(pcm=chunk, sample_rate=rate, channels=channels))
        for i, chunk in enumerate(_pieces(pcm, piece))
    ]
    return items, len(pcm) / (2 * channels * rate)


def _role_marks(role: str, duration: float) -> tuple[list[tuple[float, Message]], list[tuple[float, Message]]]:
    """The marks a role leaves: (at the start, at the end)."""
    if role == "turn":
        return [], [(duration, MarkMessage(name="user:turn_end"))]
    if role in ("backchannel", "barge_in", "noise"):
        return [(0.0, MarkMessage(name=f"user:{role}"))], []
    return [], []


def _trim(pcm: bytes) -> bytes:
    """Speech without the synthesiser's silent lead-in and tail (the event's times are the speech's)."""
    x = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > _SILENCE_LEVEL)
    return x[loud[0] : loud[-1] + 1].tobytes() if loud.size else pcm


def _image(event: Image, key: str) -> tuple[UserImage, str]:
    if event.path is not None:
        try:
            with open(event.path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ScenarioError(f"cannot read the image: {exc.strerror}", key=f"{key}.path", value=event.path) from None
        fmt = "png" if event.path.lower().endswith(".png") else "jpeg"
        return UserImage(data=data, format=fmt), f"image {event.path.rsplit('/', 1)[-1]}"
    w, h = event.width, event.height
    y, x = np.mgrid[0:h, 0:w]
    if event.pattern == "checker":
        v = (((x // 20) + (y // 20)) % 2 * 255).astype(np.uint8)
        rgb = np.stack([v, v, v], axis=-1)
    elif event.pattern == "gradient":
        rgb = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), np.full_like(x, 128)], axis=-1)
    else:
        rgb = np.broadcast_to(np.asarray(event.color), (h, w, 3))
    data = rgb.astype(np.uint8).tobytes()
    what = f"solid rgb({', '.join(map(str, event.color))})" if event.pattern == "solid" else event.pattern
    return UserImage(data=data, format="rgb", width=w, height=h), f"image {what} {w}x{h}"


def _noise(event: Noise) -> bytes:
    from microturn.audio import float_to_pcm16, noise

    x = noise(event.duration, level=event.level, seed=event.seed)
    if isinstance(event, Cough):
        # A cough: 10 ms attack, then an exponential decay over the burst.
        t = np.arange(x.size) / 16000
        envelope = np.minimum(1.0, t / 0.01) * np.exp(-t / max(event.duration / 4, 1e-3))
        x = (x * envelope).astype(np.float32)
    return float_to_pcm16(x)


def _say(scenario: Scenario, event: Say, key: str, period: float) -> Plan:
    mode = event.mode or scenario.speech.mode
    wpm = event.wpm or scenario.speech.wpm or (300 if mode == "text" else 175)
    kind = "interrupt" if isinstance(event, Interrupt) else "say"
    items: list[tuple[float, Message]]
    if mode == "text":
        interval = 60.0 / wpm
        words = event.text.split()
        # Perception joins the pieces of a window unchanged, so every word after the first brings its space.
        items = [(i * interval, UserText(text=w if i == 0 else f" {w}")) for i, w in enumerate(words)]
        duration = len(words) * interval
    else:
        from microturn.audio import SynthesisError, SynthesisUnavailable, synthesize
        from microturn.audio.errors import AudioInputError

        voice = event.voice or scenario.speech.voice
        try:
            pcm = _trim(synthesize(event.text, voice=voice, wpm=wpm))
        except SynthesisUnavailable as exc:
            raise ScenarioError(f"speech mode needs espeak-ng: {exc}", key=f"{key}.text", value=event.text) from None
        except (SynthesisError, AudioInputError) as exc:
            raise ScenarioError(f"cannot synthesise it: {exc}", key=f"{key}.text", value=event.text) from None
        items, duration = _audio_items(pcm, 16000, 1, period)
        if event.transcript:
            # As a streaming recogniser would: the transcript in the window of the last piece of speech.
            items.append((items[-1][0], UserText(text=event.text)))
    before, after = _role_marks(event.role, duration)
    label = f'{kind} "{event.text}" ({event.role}, {mode})'
    return Plan(0, label, duration, tuple(before + items + after))


def prepare_plans(scenario: Scenario, *, period: float = TICK_PERIOD) -> list[Plan]:
    """What every timeline event sends. Synthesises speech (cached), reads WAV and image files and generates
    noise and images here, before the session runs; raises :class:`ScenarioError` naming the event."""
    from microturn.audio import read_wav
    from microturn.audio.errors import WavFormatError

    plans = []
    for index, event in enumerate(scenario.timeline):
        key = f"timeline[{index}]"
        if isinstance(event, Say):
            plan = _say(scenario, event, key, period)
        elif isinstance(event, Play):
            try:
                wav = read_wav(event.path)
            except WavFormatError as exc:
                raise ScenarioError(str(exc), key=f"{key}.path", value=event.path) from None
            items, duration = _audio_items(wav.pcm, wav.sample_rate, wav.channels, period)
            if event.transcript and items:
                items.append((items[-1][0], UserText(text=event.transcript)))
            before, after = _role_marks(event.role, duration)
            name = event.path.rsplit("/", 1)[-1]
            plan = Plan(0, f"play {name} ({duration:.2f} s, {event.role})", duration, tuple(before + items + after))
        elif isinstance(event, Image):
            message, label = _image(event, key)
            plan = Plan(0, label, 0.0, ((0.0, message),))
        elif isinstance(event, Silence):
            plan = Plan(0, f"silence {event.duration:.2f} s", event.duration)
        elif isinstance(event, Pause):
            marks = ((0.0, MarkMessage(name="user:pause")), (event.duration, MarkMessage(name="user:pause_end")))
            plan = Plan(0, f"pause {event.duration:.2f} s", event.duration, marks)
        elif isinstance(event, Noise):
            items, duration = _audio_items(_noise(event), 16000, 1, period)
            before = [(0.0, MarkMessage(name="user:noise"))] if event.role == "noise" else []
            kind = "cough" if isinstance(event, Cough) else "noise"
            plan = Plan(0, f"{kind} {duration:.2f} s (level {event.level:g})", duration, tuple(before + items))
        elif isinstance(event, MarkEvent):
            plan = Plan(0, f"mark {event.name}", 0.0, ((0.0, MarkMessage(name=f"mark:{event.name}")),))
        else:  # pragma: no cover - the union is closed; a new kind must be added here
            raise ScenarioError(f"no plan for event kind {type(event).__name__}", key=key)
        plans.append(Plan(index, plan.label, plan.duration, plan.items))
    return plans


# --- firing the timeline ----------------------------------------------------------------------------------------


@dataclass
class Fired:
    """A timeline event that was scheduled: when it starts and ends, and why then."""

    index: int
    start: float
    end: float
    label: str
    cause: str


@dataclass
class _Trigger:
    kind: str  # "at", "ref" or "event"
    at: float = 0.0
    ref: Reference | None = None
    target: int | None = None
    delay: float = 0.0
    cause: str = ""


@dataclass
class Director:
    """Fires a scenario's timeline in a session: absolute events when attached, relative ones when what they
    wait for is observed. Use :meth:`observe` as a session tap and call :meth:`attach` once the session is
    open."""

    scenario: Scenario
    plans: Sequence[Plan]
    period: float = TICK_PERIOD
    fired: dict[int, Fired] = field(default_factory=dict)
    occurrences: Occurrences = field(default_factory=Occurrences)

    def __post_init__(self) -> None:
        self._session: Any = None
        self._early: list[Message] = []
        self._waiting: dict[str, list[int]] = defaultdict(list)
        self._followers: dict[tuple[int, str], list[int]] = defaultdict(list)
        self._counts: dict[str, int] = defaultdict(int)
        ids = {e.id: i for i, e in enumerate(self.scenario.timeline) if e.id is not None}
        self.triggers: list[_Trigger] = []
        for i, event in enumerate(self.scenario.timeline):
            delay = (event.delay_ms or 0) / 1000 + (event.delay_ticks or 0) * self.period
            if event.at is not None:
                trigger = _Trigger("at", at=event.at, cause=f"at {event.at:.3f} s")
            elif event.after is None:
                if i == 0:
                    trigger = _Trigger("at", at=0.0, cause="at 0.000 s")
                else:
                    trigger = _Trigger("event", target=i - 1, ref=Reference("", 1), cause=f"after timeline[{i - 1}]")
                    self._followers[(i - 1, "end")].append(i)
            else:
                ref = parse_reference(event.after, event.nth)
                shown = f"{event.after}" + (f" #{ref.nth}" if ref.nth != 1 and "#" not in event.after else "")
                cause = f"{round(delay * 1000)} ms after {shown}" if delay else f"at {shown}"
                if ref.event_id is not None:
                    trigger = _Trigger("event", target=ids[ref.event_id], ref=ref, delay=delay, cause=cause)
                    self._followers[(ids[ref.event_id], ref.edge)].append(i)
                elif ref.name == "start":
                    trigger = _Trigger("at", at=delay, cause=cause)
                else:
                    trigger = _Trigger("ref", ref=ref, delay=delay, cause=cause)
                    self._waiting[ref.name].append(i)
            self.triggers.append(trigger)

    def attach(self, session: Any) -> None:
        """Start: schedule every event whose time is known now, then catch up on messages already seen."""
        self._session = session
        for i, trigger in enumerate(self.triggers):
            if trigger.kind == "at":
                self._fire(i, trigger.at)
        early, self._early = self._early, []
        for message in early:
            self.observe(message)

    def observe(self, message: Message) -> None:
        """The session tap: count occurrences and fire the events waiting for them."""
        if self._session is None:
            self._early.append(message)
            return
        for name, t in self.occurrences.feed(message):
            self._counts[name] += 1
            waiting = self._waiting.get(name)
            if not waiting:
                continue
            for i in list(waiting):
                trigger = self.triggers[i]
                assert trigger.ref is not None
                if trigger.ref.nth == self._counts[name]:
                    waiting.remove(i)
                    start = t + trigger.delay
                    now = self._session.clock.now()
                    self._fire(i, start if start > now else now + EPSILON)

    def _fire(self, index: int, start: float) -> None:
        if index in self.fired:
            return
        plan = self.plans[index]
        start = snap(start, self.period)
        end = snap(start + plan.duration, self.period)
        self.fired[index] = Fired(index, start, end, plan.label, self.triggers[index].cause)
        for offset, message in plan.items:
            self._session.schedule(message, snap(start + offset, self.period), source="scenario")
        for edge, t in (("start", start), ("end", end)):
            for follower in self._followers.get((index, edge), []):
                self._fire(follower, max(t + self.triggers[follower].delay, start))

    def not_fired(self) -> list[tuple[int, str]]:
        """Events that never started, with what they were waiting for."""
        return [(i, self.triggers[i].cause) for i in range(len(self.triggers)) if i not in self.fired]

    def event_times(self) -> dict[str, tuple[float, float]]:
        """(start, end) of every fired event that has an id."""
        out = {}
        for i, fired in self.fired.items():
            event_id = self.scenario.timeline[i].id
            if event_id is not None:
                out[event_id] = (fired.start, fired.end)
        return out

