"""Turn-taking metrics computed from a session's messages alone (a recording, live or scripted).

The figures follow Full-Duplex-Bench (FD-bench v1) where it defines them, and add our own. Everything is read
off the recorded messages, so ``microturn metrics RECORDING`` recomputes them for any session.

**Time base.** Window k is [k·P, (k+1)·P) with P the tick period (``SessionStarted.tick_period``, 0.2 s by
default). The *user speaks* in window k when ``InputChunk(tick=k).speech_prob >= 0.5``, or when the chunk
carries text and no audio frames (a typed line is speech for that window, as the dialog-state actor treats
it; a transcript that arrives with audio is not, since it lands after the speech it transcribes). The
*assistant speaks* in window j when a ``Playout(tick=j)`` exists: the output mixer publishes one for every
window in which a word of an utterance sounds (empty text between word starts) and none in silence, so the
Playout windows are exactly the audible ones with or without rendered PCM.

**Utterances.** Playout windows grouped by ``utterance_id``. An utterance *starts* at the start of its first
Playout window and *ends* at the end of its last one; its words are the words of its Playouts (what was
played). It *begins after* a message M when its ``SpeechStarted`` (else its first Playout) has a higher seq
than M. What the model *said* for it is the text of the ``OutputChunk`` s of its generation (each chunk
belongs to the latest ``SpeechStarted`` of that generation before it).

**User events.** From ``Mark`` messages named per :data:`~microturn.scenarios.outcome.USER_EVENT_MARKS`
(``user:turn_end`` etc.) at their stamp time, when the session has any. Otherwise (a live session) they are
derived from ``DialogState`` changes and the user-speech windows:

- *turn end*: the user state becomes ``yielding`` or ``inviting``; the event is at the end of the last
  user-speech window before it, provided the user spoke since the previous turn end and that speech was not a
  backchannel;
- *pause*: the user state goes from ``speaking`` to ``pausing`` or ``thinking`` while the assistant is silent,
  and either it is ``thinking`` (the user signalled more to come) or the user speaks again before the next
  ``yielding`` / ``inviting`` / ``interrupting``; at the end of the last speech window; *pause end* at the
  start of the first speech window after it;
- *barge-in*: the user state becomes ``interrupting``; at the start of the stretch of user speech (the run of
  consecutive speech windows) in progress: the start of the overlap;
- *backchannel*: any other stretch of user speech that starts while an assistant utterance is playing
  (between its start and its end). A cough and a backchannel look alike without marks: no *noise* events.

**Takeover** (FD-bench TOR). Each event (except pause end) has a window [t, u): u is the time of the next
event, except that a barge-in's window also spans the pauses and the end of the interrupting turn (the reply
to an interruption comes after it). The assistant *takes over* when an utterance that starts in [t, u) lasts
at least 1 s or has more than 3 words. An utterance already playing at t is not a takeover (after a
backchannel the assistant should carry on; that is not taking the floor anew). Takeover rates are the share
of events with a takeover, per kind: pauses and backchannels (and noises) should be LOW, smooth turns (turn
ends) and interruptions (barge-ins) HIGH.

**Response latency** (per turn end with a takeover, as FD-bench): the start of the first word (the first
Playout window with text) of the taking-over utterance minus the end of the user's turn (the event time).

**Stop latency** (per barge-in): the end of the last Playout window of the utterance playing at the barge-in
time, minus that time: how long the assistant kept talking over the user. None for a barge-in over silence.

**Talk-over ratio**: windows where both speak / windows where the assistant speaks.

**Background delivery delay** (per final ``BackgroundUpdate`` whose delivery is not ``silent``): the start of
the first utterance that begins after the update and delivers it (its said and played words contain at least
half of the update's distinct words of four letters or more), or, when none does, of the next utterance at
all; minus the update's time. None (undelivered) when no utterance follows.

**Tool latency seen by the user** (per ``ToolCall``): the start of the first utterance that begins after the
matching ``ToolResult`` minus the call's time: how long the user waits for the answer to be spoken.

**Heard-vs-said loss** (per truncated ``Heard``): 1 - (words heard / words the model said for that utterance).

Each figure is the mean over its events; None where there were no such events.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from microturn.messages import (
    BackgroundUpdate,
    DialogState,
    Heard,
    InputChunk,
    Mark,
    Message,
    OutputChunk,
    Playout,
    SessionStarted,
    SpeechEnded,
    SpeechStarted,
    ToolCall,
    ToolResult,
)

from .outcome import USER_EVENT_MARKS

__all__ = [
    "SPEECH_THRESHOLD",
    "TAKEOVER_SECONDS",
    "TAKEOVER_WORDS",
    "EventMetric",
    "ToolMetric",
    "BackgroundMetric",
    "LossMetric",
    "Metrics",
    "compute_metrics",
    "figures",
    "format_metrics",
    "format_value",
    "metric_rows",
    "metrics_main",
]

SPEECH_THRESHOLD = 0.5
"""``InputChunk.speech_prob`` at or above which the user speaks in that window."""
TAKEOVER_SECONDS = 1.0
"""FD-bench: assistant output lasting at least this long is a takeover ..."""
TAKEOVER_WORDS = 3
"""... and so is output with more than this many words."""
_EPS = 1e-9
_WORD = re.compile(r"[a-z0-9']+")


class EventMetric(msgspec.Struct, frozen=True, kw_only=True):
    """One user event and what the assistant did about it.

    ``kind`` is ``turn_end | pause | pause_end | backchannel | barge_in | noise``; ``origin`` ``mark`` or
    ``derived``; ``until`` the end of its takeover window (None: the end of the session); ``utterance_id`` the
    utterance that decided the takeover (the first that starts in the window when none qualifies);
    ``interrupted_utterance`` the one playing at the event time, and ``stopped`` whether it was cut off."""

    kind: str
    time: float
    origin: str
    until: float | None = None
    takeover: bool | None = None
    utterance_id: int | None = None
    response_start: float | None = None
    latency: float | None = None
    interrupted_utterance: int | None = None
    stop_latency: float | None = None
    stopped: bool | None = None


class ToolMetric(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call: when it was called and answered, and when the user started hearing the answer."""

    call_id: str
    name: str
    called: float
    result: float | None = None
    ok: bool | None = None
    answer_utterance: int | None = None
    latency: float | None = None


class BackgroundMetric(msgspec.Struct, frozen=True, kw_only=True):
    """One final background result and when the user started hearing it (``matched``: by its words)."""

    task_id: str
    time: float
    delivery: str
    utterance_id: int | None = None
    matched: bool = False
    delay: float | None = None


class LossMetric(msgspec.Struct, frozen=True, kw_only=True):
    """One truncated utterance: words the model said for it, words the user heard, and the loss."""

    utterance_id: int
    said: int
    heard: int
    loss: float | None = None


class Metrics(msgspec.Struct, frozen=True, kw_only=True):
    """The figures of one session (None where there were no such events) and the per-event details."""

    tick_period: float
    duration: float
    event_source: str
    takeover_pause: float | None = None
    takeover_backchannel: float | None = None
    takeover_turn: float | None = None
    takeover_interruption: float | None = None
    takeover_noise: float | None = None
    response_latency_s: float | None = None
    stop_latency_s: float | None = None
    talk_over_ratio: float | None = None
    background_delivery_delay_s: float | None = None
    tool_latency_s: float | None = None
    heard_loss: float | None = None
    assistant_windows: int = 0
    user_windows: int = 0
    overlap_windows: int = 0
    events: list[EventMetric] = []
    tools: list[ToolMetric] = []
    background: list[BackgroundMetric] = []
    losses: list[LossMetric] = []


@dataclass
class _Utterance:
    uid: int
    generation: int | None = None
    begin_seq: int | None = None
    windows: list[int] = field(default_factory=list)
    first_word: int | None = None
    played: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    truncated: bool = False

    def start(self, period: float) -> float:
        return self.windows[0] * period

    def end(self, period: float) -> float:
        return (self.windows[-1] + 1) * period

    def takes_over(self, period: float) -> bool:
        duration = self.end(period) - self.start(period)
        return duration >= TAKEOVER_SECONDS - _EPS or len(self.played) > TAKEOVER_WORDS


@dataclass(frozen=True)
class _Event:
    kind: str
    time: float
    origin: str


def _r(x: float | None) -> float | None:
    """Times are sums of tick multiples: round away float noise (0.8499999 -> 0.85)."""
    return None if x is None else round(x, 6)


def _mean(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return _r(sum(got) / len(got)) if got else None


def _rate(flags: Sequence[bool | None]) -> float | None:
    got = [f for f in flags if f is not None]
    return _r(sum(got) / len(got)) if got else None


def _words(text: str) -> list[str]:
    return text.split()


def _stamp_seq(message: Message) -> int:
    return message.stamp.seq if message.stamp is not None else -1


def _stamp_time(message: Message) -> float:
    return message.stamp.time if message.stamp is not None else 0.0


def _cut_off(m: Heard | SpeechEnded) -> bool:
    return m.truncated if isinstance(m, Heard) else m.reason == "interrupted"


def _utterances(messages: Sequence[Message]) -> dict[int, _Utterance]:
    """Every utterance that played at least one window, with what was played and what the model said."""
    utts: dict[int, _Utterance] = {}
    latest_by_generation: dict[int, int] = {}
    said: dict[int, list[str]] = {}
    for m in messages:
        if isinstance(m, SpeechStarted):
            u = utts.setdefault(m.utterance_id, _Utterance(m.utterance_id))
            u.generation = m.generation
            u.begin_seq = _stamp_seq(m)
            latest_by_generation[m.generation] = m.utterance_id
        elif isinstance(m, OutputChunk) and m.text:
            # a session without SpeechStarted (e.g. the echo demo) names utterances by generation
            uid = latest_by_generation.get(m.generation, m.generation)
            said.setdefault(uid, []).extend(_words(m.text))
        elif isinstance(m, Playout):
            u = utts.setdefault(m.utterance_id, _Utterance(m.utterance_id))
            if u.begin_seq is None:
                u.begin_seq = _stamp_seq(m)
            u.windows.append(m.tick)
            if m.text:
                if u.first_word is None:
                    u.first_word = m.tick
                u.played.extend(_words(m.text))
        elif isinstance(m, (Heard, SpeechEnded)) and m.utterance_id in utts and _cut_off(m):
            utts[m.utterance_id].truncated = True
    for uid, words in said.items():
        if uid in utts:
            utts[uid].said = words
    for u in utts.values():
        u.windows.sort()
    return utts


class _Timeline:
    """The session's windows, utterances and user-speech runs, with the queries the metrics need."""

    def __init__(self, messages: Sequence[Message], tick_period: float | None) -> None:
        started = next((m for m in messages if isinstance(m, SessionStarted)), None)
        self.period = tick_period or (started.tick_period if started is not None else 0.2)
        self.duration = max((_stamp_time(m) for m in messages), default=0.0)
        chunks = sorted((m for m in messages if isinstance(m, InputChunk)), key=lambda c: c.tick)
        # (tick, seq) of each user-speech window, in order
        self.speech: list[tuple[int, int]] = [
            (c.tick, _stamp_seq(c)) for c in chunks if c.speech_prob >= SPEECH_THRESHOLD or (c.text and c.n_frames == 0)
        ]
        self.speech_seqs = [s for _, s in self.speech]
        self.user_ticks = {t for t, _ in self.speech}
        # runs of consecutive speech windows: (first tick, last tick)
        self.runs: list[tuple[int, int]] = []
        for t, _ in self.speech:
            if self.runs and t == self.runs[-1][1] + 1:
                self.runs[-1] = (self.runs[-1][0], t)
            else:
                self.runs.append((t, t))
        all_utts = _utterances(messages)
        self.unplayed = {uid: u for uid, u in all_utts.items() if not u.windows}
        self.utts = sorted((u for u in all_utts.values() if u.windows), key=lambda u: u.windows[0])
        self.by_id = {u.uid: u for u in self.utts}
        self.assistant_ticks = {t for u in self.utts for t in u.windows}

    def run_of(self, tick: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.runs, (tick, math.inf)) - 1
        return self.runs[i]

    def last_speech_before(self, seq: int) -> int | None:
        """The last user-speech window whose chunk was published before ``seq``."""
        i = bisect.bisect_left(self.speech_seqs, seq) - 1
        return self.speech[i][0] if i >= 0 else None

    def next_speech_after(self, seq: int, before: float) -> int | None:
        i = bisect.bisect_right(self.speech_seqs, seq)
        if i < len(self.speech) and self.speech_seqs[i] < before:
            return self.speech[i][0]
        return None

    def playing_at(self, t: float) -> _Utterance | None:
        """The utterance whose played span covers session time ``t``."""
        for u in self.utts:
            if u.start(self.period) - _EPS <= t < u.end(self.period) - _EPS:
                return u
        return None

    def starting_in(self, start: float, until: float | None) -> list[_Utterance]:
        end = math.inf if until is None else until
        return [u for u in self.utts if start - _EPS <= u.start(self.period) < end - _EPS]

    def begins_after(self, seq: int) -> list[_Utterance]:
        return sorted(
            (u for u in self.utts if u.begin_seq is not None and u.begin_seq > seq), key=lambda u: u.begin_seq or 0
        )


def _mark_events(messages: Sequence[Message]) -> list[_Event]:
    events = []
    for m in messages:
        if isinstance(m, Mark) and m.name in USER_EVENT_MARKS:
            events.append(_Event(m.name.split(":", 1)[1], _stamp_time(m), "mark"))
    return events


def _derived_events(messages: Sequence[Message], tl: _Timeline) -> list[_Event]:
    """User events of a session without scenario marks, from DialogState changes and user-speech runs."""
    p = tl.period
    states = [m for m in messages if isinstance(m, DialogState)]
    events: list[_Event] = []
    barge_runs: set[tuple[int, int]] = set()
    prev: str | None = None
    for ds in states:
        if ds.user == "interrupting" and prev != "interrupting":
            k = tl.last_speech_before(_stamp_seq(ds))
            if k is not None:
                run = tl.run_of(k)
                barge_runs.add(run)
                events.append(_Event("barge_in", run[0] * p, "derived"))
        prev = ds.user
    backchannel_runs = set()
    for run in tl.runs:
        if run not in barge_runs and tl.playing_at(run[0] * p) is not None:
            backchannel_runs.add(run)
            events.append(_Event("backchannel", run[0] * p, "derived"))
    prev = None
    last_turn_end = last_pause = -math.inf
    for i, ds in enumerate(states):
        seq = _stamp_seq(ds)
        if ds.user != prev and prev is not None:
            k = tl.last_speech_before(seq)
            usable = k is not None and tl.run_of(k) not in backchannel_runs
            if ds.user in ("yielding", "inviting") and usable:
                end = (k + 1) * p  # type: ignore[operator]
                if end > last_turn_end + _EPS:
                    events.append(_Event("turn_end", end, "derived"))
                    last_turn_end = end
            elif ds.user in ("pausing", "thinking") and prev == "speaking" and ds.assistant == "silent" and usable:
                stop = next(
                    (
                        _stamp_seq(later)
                        for later in states[i + 1 :]
                        if later.user in ("yielding", "inviting", "interrupting")
                    ),
                    math.inf,
                )
                resume = tl.next_speech_after(seq, stop)
                start = (k + 1) * p  # type: ignore[operator]
                # a transcript landing after the speech flips the state to speaking and back: one pause only
                if (ds.user == "thinking" or resume is not None) and start > last_pause + _EPS:
                    last_pause = start
                    events.append(_Event("pause", start, "derived"))
                    if resume is not None:
                        events.append(_Event("pause_end", resume * p, "derived"))
        prev = ds.user
    return events


def _window_end(events: list[_Event], i: int) -> float | None:
    """The end of event i's takeover window (events sorted by time)."""
    ev = events[i]
    seen_turn_end = False
    for later in events[i + 1 :]:
        if later.time <= ev.time + _EPS:
            continue
        if ev.kind == "barge_in":
            # the interrupting turn's own pauses and end belong to the barge-in: the reply comes after them
            if later.kind in ("pause", "pause_end"):
                continue
            if later.kind == "turn_end" and not seen_turn_end:
                seen_turn_end = True
                continue
        return later.time
    return None


def _event_metric(ev: _Event, until: float | None, tl: _Timeline) -> EventMetric:
    p = tl.period
    if ev.kind == "pause_end":
        return EventMetric(kind=ev.kind, time=_r(ev.time), origin=ev.origin, until=_r(until))
    candidates = tl.starting_in(ev.time, until)
    decisive = next((u for u in candidates if u.takes_over(p)), None)
    shown = decisive or (candidates[0] if candidates else None)
    response_start = None
    if shown is not None:
        response_start = (shown.first_word if shown.first_word is not None else shown.windows[0]) * p
    latency = None
    if ev.kind == "turn_end" and decisive is not None and response_start is not None:
        latency = max(0.0, response_start - ev.time)
    playing = tl.playing_at(ev.time) if ev.kind in ("barge_in", "backchannel", "noise") else None
    stop_latency = None
    if ev.kind == "barge_in" and playing is not None:
        stop_latency = playing.end(p) - ev.time
    return EventMetric(
        kind=ev.kind,
        time=_r(ev.time),
        origin=ev.origin,
        until=_r(until),
        takeover=decisive is not None,
        utterance_id=shown.uid if shown is not None else None,
        response_start=_r(response_start),
        latency=_r(latency),
        interrupted_utterance=playing.uid if playing is not None else None,
        stop_latency=_r(stop_latency),
        stopped=playing.truncated if playing is not None else None,
    )


def _content_words(text: str) -> set[str]:
    words = set(_WORD.findall(text.lower()))
    long = {w for w in words if len(w) >= 4}
    return long or words


def _delivers(u: _Utterance, wanted: set[str]) -> bool:
    """Whether the utterance's said or played words hold at least half of the update's words."""
    have = _content_words(" ".join(u.said + u.played))
    return bool(wanted) and len(wanted & have) * 2 >= len(wanted)


def _background(messages: Sequence[Message], tl: _Timeline) -> list[BackgroundMetric]:
    out = []
    for m in messages:
        if not (isinstance(m, BackgroundUpdate) and m.status == "final" and m.delivery != "silent"):
            continue
        wanted = _content_words(m.text)
        after = tl.begins_after(_stamp_seq(m))
        chosen = next((u for u in after if _delivers(u, wanted)), None)
        matched = chosen is not None
        chosen = chosen or (after[0] if after else None)
        out.append(
            BackgroundMetric(
                task_id=m.task_id,
                time=_stamp_time(m),
                delivery=m.delivery,
                utterance_id=chosen.uid if chosen else None,
                matched=matched,
                delay=_r(chosen.start(tl.period) - _stamp_time(m)) if chosen else None,
            )
        )
    return out


def _tools(messages: Sequence[Message], tl: _Timeline) -> list[ToolMetric]:
    results: dict[str, ToolResult] = {}
    for m in messages:
        if isinstance(m, ToolResult):
            results.setdefault(m.call_id, m)
    out = []
    for m in messages:
        if not isinstance(m, ToolCall):
            continue
        result = results.get(m.call_id)
        answer = None
        if result is not None:
            after = tl.begins_after(_stamp_seq(result))
            answer = after[0] if after else None
        out.append(
            ToolMetric(
                call_id=m.call_id,
                name=m.name,
                called=_stamp_time(m),
                result=_stamp_time(result) if result is not None else None,
                ok=result.ok if result is not None else None,
                answer_utterance=answer.uid if answer else None,
                latency=_r(answer.start(tl.period) - _stamp_time(m)) if answer else None,
            )
        )
    return out


def _losses(messages: Sequence[Message], tl: _Timeline) -> list[LossMetric]:
    said = {u.uid: len(u.said) for u in tl.utts} | {uid: len(u.said) for uid, u in tl.unplayed.items()}
    out = []
    for m in messages:
        if isinstance(m, Heard) and m.truncated:
            n_said = said.get(m.utterance_id, 0)
            n_heard = len(_words(m.text_heard))
            loss = _r(max(0.0, 1.0 - n_heard / n_said)) if n_said else None
            out.append(LossMetric(utterance_id=m.utterance_id, said=n_said, heard=n_heard, loss=loss))
    return out


def compute_metrics(messages: Sequence[Message], *, tick_period: float | None = None) -> Metrics:
    """All the figures of one session from its stamped messages (in seq order, as a recording holds them).

    ``tick_period`` overrides the session's own (from ``SessionStarted``; 0.2 s when there is none)."""
    messages = sorted(messages, key=_stamp_seq)
    tl = _Timeline(messages, tick_period)
    marked = _mark_events(messages)
    raw = marked if marked else _derived_events(messages, tl)
    raw.sort(key=lambda e: e.time)
    events = [_event_metric(ev, _window_end(raw, i), tl) for i, ev in enumerate(raw)]

    def of(kind: str) -> list[EventMetric]:
        return [e for e in events if e.kind == kind]

    overlap = tl.assistant_ticks & tl.user_ticks
    tools = _tools(messages, tl)
    background = _background(messages, tl)
    losses = _losses(messages, tl)
    return Metrics(
        tick_period=tl.period,
        duration=tl.duration,
        event_source="marks" if marked else "dialog_state",
        takeover_pause=_rate([e.takeover for e in of("pause")]),
        takeover_backchannel=_rate([e.takeover for e in of("backchannel")]),
        takeover_turn=_rate([e.takeover for e in of("turn_end")]),
        takeover_interruption=_rate([e.takeover for e in of("barge_in")]),
        takeover_noise=_rate([e.takeover for e in of("noise")]),
        response_latency_s=_mean([e.latency for e in of("turn_end")]),
        stop_latency_s=_mean([e.stop_latency for e in of("barge_in")]),
        talk_over_ratio=_r(len(overlap) / len(tl.assistant_ticks)) if tl.assistant_ticks else None,
        background_delivery_delay_s=_mean([b.delay for b in background]),
        tool_latency_s=_mean([t.latency for t in tools]),
        heard_loss=_mean([x.loss for x in losses]),
        assistant_windows=len(tl.assistant_ticks),
        user_windows=len(tl.user_ticks),
        overlap_windows=len(overlap),
        events=events,
        tools=tools,
        background=background,
        losses=losses,
    )


# (field, label, what is better, how many events it averages)
_ROWS = [
    ("takeover_pause", "takeover rate on pauses", "low", lambda m: _count(m, "pause")),
    ("takeover_backchannel", "takeover rate on backchannels", "low", lambda m: _count(m, "backchannel")),
    ("takeover_noise", "takeover rate on noises", "low", lambda m: _count(m, "noise")),
    ("takeover_turn", "takeover rate on smooth turns", "high", lambda m: _count(m, "turn_end")),
    ("takeover_interruption", "takeover rate on interruptions", "high", lambda m: _count(m, "barge_in")),
    ("response_latency_s", "response latency (s)", "low", lambda m: sum(e.latency is not None for e in m.events)),
    ("stop_latency_s", "stop latency (s)", "low", lambda m: sum(e.stop_latency is not None for e in m.events)),
    ("talk_over_ratio", "talk-over ratio", "low", lambda m: m.assistant_windows),
    (
        "background_delivery_delay_s",
        "background delivery delay (s)",
        "low",
        lambda m: sum(b.delay is not None for b in m.background),
    ),
    (
        "tool_latency_s",
        "tool latency seen by the user (s)",
        "low",
        lambda m: sum(t.latency is not None for t in m.tools),
    ),
    ("heard_loss", "heard-vs-said loss after barge-ins", "low", lambda m: sum(x.loss is not None for x in m.losses)),
]


def _count(m: Metrics, kind: str) -> int:
    return sum(e.kind == kind for e in m.events)


def metric_rows(metrics: Metrics) -> list[tuple[str, str, float | None, int, str]]:
    """(key, label, value, number of events it averages, which way is better) for each figure."""
    return [(key, label, getattr(metrics, key), count(metrics), better) for key, label, better, count in _ROWS]


def figures(metrics: Metrics) -> dict[str, float | int | str | None]:
    """The named figures (no per-event details), e.g. for a JSON line."""
    out: dict[str, float | int | str | None] = {key: getattr(metrics, key) for key, *_ in _ROWS}
    out |= {
        "events": metrics.event_source,
        "pauses": _count(metrics, "pause"),
        "backchannels": _count(metrics, "backchannel"),
        "noises": _count(metrics, "noise"),
        "turns": _count(metrics, "turn_end"),
        "interruptions": _count(metrics, "barge_in"),
        "assistant_windows": metrics.assistant_windows,
        "overlap_windows": metrics.overlap_windows,
        "duration_s": metrics.duration,
    }
    return out


def format_value(key: str, value: float | None) -> str:
    """A figure as the table shows it: seconds with ms precision, rates with two decimals, '-' for None."""
    if value is None:
        return "-"
    return f"{value:.3f}" if key.endswith("_s") else f"{value:.2f}"


def format_metrics(metrics: Metrics) -> str:
    """A compact table of the figures, one line each, with the number of events behind each."""
    lines = [f"{'metric':<36} {'value':>8} {'n':>4}  better"]
    for key, label, value, n, better in metric_rows(metrics):
        lines.append(f"{label:<36} {format_value(key, value):>8} {n:>4}  {better}")
    source = "scenario marks" if metrics.event_source == "marks" else "dialog states (no scenario marks)"
    lines.append(f"events from {source}; {metrics.duration:.1f} s of session time")
    return "\n".join(lines)


def metrics_main(path: str) -> int:
    """``microturn metrics RECORDING``: print the table, then (last line) the figures as one JSON object.

    A CLI entry point, so it prints. Returns 0, or 2 (with an error on stderr) when ``path`` is not a readable
    recording."""
    from microturn.runtime import MicroturnError, read_recording

    try:
        recording = read_recording(path)
    except MicroturnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = compute_metrics(recording.messages, tick_period=recording.header.tick_period)
    if recording.truncated:
        print(f"warning: {path} is cut off ({recording.problem}); metrics of its intact prefix")
    print(format_metrics(metrics))
    print(json.dumps(figures(metrics)))
    return 0
