"""Judging a scenario's expectations from the session's messages (a recording, or what a tap collected).

What the user heard is the truth: an assistant utterance *sounds* in the windows of its ``Playout`` s (the
output mixer publishes one for every window in which one of its words sounds, and none in silence). Its first
word is heard from the start of its first ``Playout`` window with text; it stops sounding at the end of its
last ``Playout`` window. These are the definitions the metrics use too (see ``metrics.py``).

Each kind (see :mod:`microturn.scenarios.format`):

- ``responds_within``: the first utterance that begins after the anchor (later on the bus) and is not a
  backchannel has its first word heard within the budget of the anchor's time;
- ``silent_between``: no word (of a non-backchannel utterance, unless ``backchannels = false``) starts in a
  window that begins in [start, end);
- ``stops_within``: the utterance sounding at the anchor (else one started but not yet audible) stops
  sounding within the budget; "the assistant was not speaking" fails it;
- ``keeps_speaking``: that utterance is not cut (completed, or still going when the session ended);
- ``heard_within``: the first utterance that begins after the anchor and carries the background result (at
  least half of its distinct words of four letters or more; else the first utterance at all) is heard
  within the budget;
- ``says`` / ``does_not_say``: an utterance as heard matches the pattern (case-insensitive search); with
  ``start`` / ``end``, only utterances whose first word is heard in [start, end) count;
- ``tool_called`` / ``no_tool_called``: a ``ToolCall`` (of ``tool``) was, or was not, published;
- ``judged``: the ``Verdict`` message the runner published for it (a judge model's decision, see
  :mod:`microturn.scenarios.judge`): pass or fail, or *not judged* (never passed) when there is none or it
  says ``not_judged``. Judging reads the recorded verdict, so it needs no model.

The observed text says exactly what happened, with times in seconds and latencies in ms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from microturn.messages import (
    BackgroundUpdate,
    Heard,
    Interrupt,
    Message,
    OutputChunk,
    Playout,
    SpeechEnded,
    SpeechStarted,
    ToolCall,
    ToolResult,
    Verdict,
)

from .format import (
    TICK_PERIOD,
    DoesNotSay,
    HeardWithin,
    Judged,
    KeepsSpeaking,
    NoToolCalled,
    RespondsWithin,
    Says,
    Scenario,
    SilentBetween,
    StopsWithin,
    ToolCalled,
    _Budget,
    pattern_problem,
)
from .outcome import ExpectationOutcome
from .triggers import Occurrences, parse_reference

__all__ = ["Utterance", "Observed", "observe", "judge", "expectation_name"]


@dataclass
class Utterance:
    """One assistant utterance as the user heard it."""

    uid: int
    generation: int
    started: float
    seq: int
    backchannel: bool = False
    windows: list[tuple[int, str]] = field(default_factory=list)
    heard: str | None = None
    truncated: bool = False
    ended: float | None = None
    reason: str | None = None
    cut_reason: str | None = None
    period: float = TICK_PERIOD

    @property
    def first_word(self) -> float | None:
        """When its first word starts to be heard (the start of its first window with text)."""
        return next((tick * self.period for tick, text in self.windows if text), None)

    @property
    def sound_end(self) -> float | None:
        """When it stops sounding (the end of its last Playout window)."""
        return (self.windows[-1][0] + 1) * self.period if self.windows else None

    @property
    def text(self) -> str:
        """What was heard of it."""
        if self.heard is not None:
            return self.heard
        return " ".join(text for _, text in self.windows if text)

    def sounding_at(self, t: float) -> bool:
        """Whether it was audible at session time ``t``."""
        first, end = self.first_word, self.sound_end
        return first is not None and end is not None and first <= t < end


@dataclass
class Observed:
    """A session's messages, digested for judging."""

    utterances: list[Utterance]
    occurrences: dict[str, list[tuple[float, int]]]
    tool_calls: list[ToolCall]
    tool_results: dict[str, ToolResult]
    background: list[BackgroundUpdate]
    end: float
    period: float = TICK_PERIOD

    def occurrence(self, name: str, nth: int) -> tuple[float, int] | None:
        """(time, seq) of the ``nth`` occurrence of reference ``name``."""
        found = self.occurrences.get(name, [])
        return found[nth - 1] if len(found) >= nth else None


def observe(messages: Sequence[Message], period: float = TICK_PERIOD) -> Observed:
    """Digest a session's messages (in bus order)."""
    occ = Occurrences()
    occurrences: dict[str, list[tuple[float, int]]] = {"start": [(0.0, 0)]}
    utterances: dict[int, Utterance] = {}
    by_generation: dict[int, Utterance] = {}
    calls: list[ToolCall] = []
    results: dict[str, ToolResult] = {}
    background: list[BackgroundUpdate] = []
    end = 0.0
    for message in messages:
        stamp = message.stamp
        t, seq = (stamp.time, stamp.seq) if stamp is not None else (0.0, 0)
        end = max(end, t)
        for name, when in occ.feed(message):
            occurrences.setdefault(name, []).append((when, seq))
        match message:
            case SpeechStarted(utterance_id=uid, generation=g):
                u = Utterance(uid, g, t, seq, period=period)
                utterances[uid] = by_generation[g] = u
            case OutputChunk(generation=g, controls=controls) if "backchannel" in controls and g in by_generation:
                by_generation[g].backchannel = True
            case Playout(utterance_id=uid, tick=tick, text=text) if uid in utterances:
                utterances[uid].windows.append((tick, text))
            case Heard(utterance_id=uid, text_heard=text, truncated=truncated) if uid in utterances:
                utterances[uid].heard, utterances[uid].truncated = text, truncated
            case SpeechEnded(utterance_id=uid, reason=reason) if uid in utterances:
                utterances[uid].ended, utterances[uid].reason = t, reason
            case Interrupt(generation=g, reason=reason):
                for u in utterances.values():
                    if u.generation <= g and u.ended is None and u.cut_reason is None:
                        u.cut_reason = reason or "interrupt"
            case ToolCall():
                calls.append(message)
            case ToolResult(call_id=call_id):
                results.setdefault(call_id, message)
            case BackgroundUpdate():
                background.append(message)
    ordered = sorted(utterances.values(), key=lambda u: u.seq)
    return Observed(ordered, occurrences, calls, results, background, end, period)


# --- names and formatting -------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)} ms"


def _s(seconds: float) -> str:
    return f"{seconds:.3f} s"


def _quote(text: str, limit: int = 60) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f'"{text}"'


def _ref_text(ref: str | float, nth: int = 1) -> str:
    if isinstance(ref, (int, float)):
        return _s(float(ref))
    return ref + (f" #{nth}" if nth != 1 and "#" not in ref else "")


def expectation_name(expectation: object) -> str:
    """The expectation's ``name``, or a description of it."""
    name = getattr(expectation, "name", None)
    if name:
        return name
    nth = getattr(expectation, "nth", 1)
    budget = f"{_ms(expectation.budget)}" if isinstance(expectation, _Budget) else ""
    match expectation:
        case RespondsWithin(after=after):
            return f"responds within {budget} after {_ref_text(after, nth)}"
        case SilentBetween(start=start, end=end):
            return f"silent between {_ref_text(start)} and {_ref_text(end)}"
        case StopsWithin(after=after):
            return f"stops within {budget} after {_ref_text(after, nth)}"
        case KeepsSpeaking(after=after):
            return f"keeps speaking through {_ref_text(after, nth)}"
        case HeardWithin(after=after):
            return f"{_ref_text(after, nth)} heard within {budget}"
        case DoesNotSay(pattern=pattern):
            return f"does not say /{pattern}/{_window_text(expectation)}"
        case Says(pattern=pattern):
            return f"says /{pattern}/{_window_text(expectation)}"
        case NoToolCalled(tool=tool):
            return f"calls no {tool or 'tool'}"
        case ToolCalled(tool=tool):
            return f"calls {tool or 'a tool'}"
        case Judged(criterion=criterion):
            return f"judged: {_quote(criterion, 80)}"
    return type(expectation).__name__


def _window_text(e: Says) -> str:
    if e.start is not None and e.end is not None:
        return f" between {_ref_text(e.start)} and {_ref_text(e.end)}"
    if e.start is not None:
        return f" from {_ref_text(e.start)}"
    if e.end is not None:
        return f" before {_ref_text(e.end)}"
    return ""


# --- judging --------------------------------------------------------------------------------------------------


class _Anchor:
    """A resolved reference: its time, its bus seq (None for a plain time or an event edge), and a label."""

    def __init__(self, time: float, seq: int | None, label: str) -> None:
        self.time, self.seq, self.label = time, seq, label

    def before(self, u: Utterance) -> bool:
        """Whether utterance ``u`` begins after this anchor (later on the bus, or at/after its time)."""
        return u.seq > self.seq if self.seq is not None else u.started >= self.time


def _resolve(
    ref: str | float, nth: int, seen: Observed, event_times: Mapping[str, tuple[float, float]] | None
) -> _Anchor | str:
    """The anchor of a reference, or why there is none."""
    if isinstance(ref, (int, float)):
        return _Anchor(float(ref), None, _s(float(ref)))
    parsed = parse_reference(ref, nth)
    label = _ref_text(ref, nth)
    if parsed.event_id is not None:
        if event_times is None:
            return f"{label}: event times are not in the messages (judge with the runner's event times)"
        if parsed.event_id not in event_times:
            return f"{label} never happened (event {parsed.event_id!r} did not start)"
        start, end = event_times[parsed.event_id]
        return _Anchor(start if parsed.edge == "start" else end, None, label)
    found = seen.occurrence(parsed.name, parsed.nth)
    if found is None:
        count = len(seen.occurrences.get(parsed.name, []))
        times = f" (it happened {count} time{'s' if count != 1 else ''})" if count else ""
        return f"{label} never happened{times}"
    return _Anchor(found[0], found[1], label)


def _in_progress(seen: Observed, t: float) -> Utterance | None:
    """The non-backchannel utterance sounding at ``t``; else one started but not yet audible at ``t``; else
    one cut at the very instant ``t`` between two words (what happened at ``t`` cut it: it was under way)."""
    speaking = [u for u in seen.utterances if not u.backchannel and u.sounding_at(t)]
    if speaking:
        return speaking[0]
    pending = [
        u
        for u in seen.utterances
        if not u.backchannel
        and u.started <= t
        and (u.first_word is None or u.first_word > t)
        and (u.ended is None or u.ended > t)
    ]
    if pending:
        return pending[0]
    cut = [
        u
        for u in seen.utterances
        if not u.backchannel and u.started <= t and u.ended == t and u.reason == "interrupted"
    ]
    return cut[0] if cut else None


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _carries(u: Utterance, update_text: str) -> bool:
    key = {w for w in _words(update_text) if len(w) >= 4}
    heard = set(_words(u.text))
    if not key:
        words = _words(update_text)
        return bool(words) and bool(heard) and words[0] in heard
    return len(key & heard) * 2 >= len(key)


def judge(
    scenario: Scenario,
    messages: Sequence[Message],
    *,
    event_times: Mapping[str, tuple[float, float]] | None = None,
    period: float = TICK_PERIOD,
) -> list[ExpectationOutcome]:
    """Judge every expectation of ``scenario`` against the session's ``messages``; ``event_times`` (id ->
    (start, end)) resolves ``event:ID`` references (the runner knows them; a recording alone does not)."""
    seen = observe(messages, period)
    verdicts = {m.expectation: m for m in messages if isinstance(m, Verdict)}
    return [
        _judged(e, verdicts.get(i)) if isinstance(e, Judged) else _judge_one(e, seen, event_times)
        for i, e in enumerate(scenario.expect)
    ]


def _judged(e: Judged, verdict: Verdict | None) -> ExpectationOutcome:
    """A judged expectation, from the verdict the session recorded (the model is not asked again)."""
    name = expectation_name(e)
    if verdict is None:
        return ExpectationOutcome(name=name, ok=False, time=None, judged=False,
                                  observed="not judged: the session holds no verdict for it")
    # no time: a criterion is about the whole conversation, not one instant of it
    if verdict.verdict == "not_judged":
        return ExpectationOutcome(name=name, ok=False, time=None, judged=False, observed=f"not judged: {verdict.reason}")
    by = f"judge {verdict.judge}" if verdict.judge else "judge"
    return ExpectationOutcome(name=name, ok=verdict.verdict == "pass", time=None,
                              observed=f"{by}: {verdict.verdict}: {verdict.reason}")


def _outcome(expectation: object, ok: bool, time: float | None, observed: str) -> ExpectationOutcome:
    return ExpectationOutcome(name=expectation_name(expectation), ok=ok, time=time, observed=observed)


def _judge_one(e: object, seen: Observed, event_times: Mapping[str, tuple[float, float]] | None) -> ExpectationOutcome:
    match e:
        case RespondsWithin():
            return _responds_within(e, seen, event_times)
        case SilentBetween():
            return _silent_between(e, seen, event_times)
        case StopsWithin():
            return _stops_within(e, seen, event_times)
        case KeepsSpeaking():
            return _keeps_speaking(e, seen, event_times)
        case HeardWithin():
            return _heard_within(e, seen, event_times)
        case Says():
            return _says(e, seen, event_times)
        case ToolCalled():
            return _tool_called(e, seen)
    raise TypeError(f"no judge for expectation {type(e).__name__}")  # pragma: no cover - the union is closed


def _responds_within(e: RespondsWithin, seen: Observed, times: object) -> ExpectationOutcome:
    anchor = _resolve(e.after, e.nth, seen, times)  # type: ignore[arg-type]
    if isinstance(anchor, str):
        return _outcome(e, False, None, anchor)
    budget = e.budget
    for u in seen.utterances:
        if u.backchannel or not anchor.before(u) or u.first_word is None:
            continue
        latency = u.first_word - anchor.time
        verdict = "within" if latency <= budget + 1e-9 else "over"
        observed = (
            f"assistant started speaking {_ms(latency)} after {anchor.label} at {_s(anchor.time)} "
            f"(budget {_ms(budget)}, {verdict}): {_quote(u.text)}"
        )
        return _outcome(e, latency <= budget + 1e-9, anchor.time, observed)
    already = _in_progress(seen, anchor.time)
    note = f"; it was already speaking from {_s(already.first_word or already.started)}" if already else ""
    observed = f"assistant never started speaking after {anchor.label} at {_s(anchor.time)} (budget {_ms(budget)}){note}"
    return _outcome(e, False, anchor.time, observed)


def _silent_between(e: SilentBetween, seen: Observed, times: object) -> ExpectationOutcome:
    start = _resolve(e.start, 1, seen, times)  # type: ignore[arg-type]
    if isinstance(start, str):
        return _outcome(e, False, None, start)
    end = _resolve(e.end, 1, seen, times)  # type: ignore[arg-type]
    if isinstance(end, str):
        return _outcome(e, False, start.time, end)
    span = f"between {start.label} ({_s(start.time)}) and {end.label} ({_s(end.time)})"
    for u in seen.utterances:
        if u.backchannel and e.backchannels:
            continue
        words = [(tick * seen.period, text) for tick, text in u.windows if text]
        inside = [(t, text) for t, text in words if start.time <= t < end.time]
        if inside:
            kind = "backchannelled" if u.backchannel else "said"
            heard = " ".join(text for _, text in inside)
            return _outcome(e, False, inside[0][0], f"assistant {kind} {_quote(heard)} from {_s(inside[0][0])}, {span}")
    allowed = " (backchannels allowed)" if e.backchannels else ""
    return _outcome(e, True, start.time, f"assistant said nothing {span}{allowed}")


def _stops_within(e: StopsWithin, seen: Observed, times: object) -> ExpectationOutcome:
    anchor = _resolve(e.after, e.nth, seen, times)  # type: ignore[arg-type]
    if isinstance(anchor, str):
        return _outcome(e, False, None, anchor)
    budget = e.budget
    u = _in_progress(seen, anchor.time)
    if u is None:
        return _outcome(e, False, anchor.time, f"assistant was not speaking at {anchor.label} ({_s(anchor.time)})")
    stop = u.sound_end if u.sound_end is not None else anchor.time
    if u.ended is None and u.heard is None and stop >= seen.end - seen.period:
        observed = (
            f"assistant was still speaking {_quote(u.text)} when the session ended at {_s(seen.end)}, "
            f"{_ms(seen.end - anchor.time)} after {anchor.label} (budget {_ms(budget)})"
        )
        return _outcome(e, False, anchor.time, observed)
    latency = max(0.0, stop - anchor.time)
    how = (
        f"was cut ({u.cut_reason or 'interrupted'}) after {_quote(u.text)}"
        if u.truncated or u.reason == "interrupted"
        else f"finished its utterance {_quote(u.text)}"
    )
    ok = latency <= budget + 1e-9
    observed = (
        f"assistant stopped {_ms(latency)} after {anchor.label} at {_s(anchor.time)} (budget {_ms(budget)}, "
        f"{'within' if ok else 'over'}): it {how}, last heard in the window ending {_s(stop)}"
    )
    return _outcome(e, ok, anchor.time, observed)


def _keeps_speaking(e: KeepsSpeaking, seen: Observed, times: object) -> ExpectationOutcome:
    anchor = _resolve(e.after, e.nth, seen, times)  # type: ignore[arg-type]
    if isinstance(anchor, str):
        return _outcome(e, False, None, anchor)
    u = _in_progress(seen, anchor.time)
    if u is None:
        return _outcome(e, False, anchor.time, f"assistant was not speaking at {anchor.label} ({_s(anchor.time)})")
    if u.truncated or u.reason == "interrupted":
        cut = u.ended if u.ended is not None else (u.sound_end or anchor.time)
        observed = (
            f"assistant was cut ({u.cut_reason or 'interrupted'}) at {_s(cut)}, {_ms(cut - anchor.time)} after "
            f"{anchor.label} at {_s(anchor.time)}; heard only {_quote(u.text)}"
        )
        return _outcome(e, False, anchor.time, observed)
    if u.heard is None:
        observed = f"assistant went on through {anchor.label} at {_s(anchor.time)} and was still speaking at the end"
        return _outcome(e, True, anchor.time, observed)
    observed = (
        f"assistant went on through {anchor.label} at {_s(anchor.time)} and completed {_quote(u.text)} "
        f"at {_s(u.sound_end or anchor.time)}"
    )
    return _outcome(e, True, anchor.time, observed)


def _heard_within(e: HeardWithin, seen: Observed, times: object) -> ExpectationOutcome:
    anchor = _resolve(e.after, e.nth, seen, times)  # type: ignore[arg-type]
    if isinstance(anchor, str):
        return _outcome(e, False, None, anchor)
    budget = e.budget
    update = next(
        (b for b in seen.background if b.stamp is not None and b.stamp.seq == anchor.seq and b.status != "progress"),
        None,
    )
    after = [u for u in seen.utterances if not u.backchannel and anchor.before(u) and u.first_word is not None]
    what = (
        f"the background result ({update.task_id}, {update.status}, {update.delivery})"
        if update is not None
        else f"{anchor.label} ({_s(anchor.time)}):"
    )
    chosen = next((u for u in after if update is not None and _carries(u, update.text)), None)
    if chosen is None and after:
        chosen = after[0]
    arrived = f"{what} arrived at {_s(anchor.time)} and" if update is not None else f"{what} the assistant"
    if chosen is None:
        observed = f"{arrived} nothing was heard after it (budget {_ms(budget)})"
        if update is None:
            observed = f"{what} nothing was heard after it (budget {_ms(budget)})"
        return _outcome(e, False, anchor.time, observed)
    assert chosen.first_word is not None
    latency = chosen.first_word - anchor.time
    ok = latency <= budget + 1e-9
    observed = (
        f"{arrived} was heard {_ms(latency)} later, from {_s(chosen.first_word)} "
        f"(budget {_ms(budget)}, {'within' if ok else 'over'}): {_quote(chosen.text)}"
    )
    return _outcome(e, ok, anchor.time, observed)


def _says(e: Says, seen: Observed, times: Mapping[str, tuple[float, float]] | None) -> ExpectationOutcome:
    negate = isinstance(e, DoesNotSay)
    problem = pattern_problem(e.pattern)  # a scenario read back from a recording header was never validated
    if problem:
        return _outcome(e, False, None, f"the pattern /{e.pattern}/ cannot be judged: {problem}")
    pattern = re.compile(e.pattern, re.IGNORECASE)
    lo, hi, span = 0.0, float("inf"), ""
    if e.start is not None or e.end is not None:
        bounds = []
        for ref in (e.start, e.end):
            anchor = _resolve(ref, 1, seen, times) if ref is not None else None
            if isinstance(anchor, str):
                return _outcome(e, False, None, anchor)
            bounds.append(anchor)
        start, end = bounds
        lo = start.time if start is not None else 0.0
        hi = end.time if end is not None else float("inf")
        span = f" first heard between {_s(lo)} and {_s(hi) if end is not None else 'the end'}"
    for u in seen.utterances:
        in_window = not span or (u.first_word is not None and lo <= u.first_word < hi)
        if u.text and in_window and pattern.search(u.text):
            when = u.first_word if u.first_word is not None else u.started
            observed = f"assistant said {_quote(u.text)} from {_s(when)}"
            return _outcome(e, not negate, when, observed + (" (it must not)" if negate else ""))
    heard = "; ".join(f"{_quote(u.text, 40)} at {_s(u.first_word)}" for u in seen.utterances if u.first_word is not None)
    observed = f"no assistant utterance{span} matched /{e.pattern}/; heard: {heard or 'nothing'}"
    return _outcome(e, negate, lo if span else None, observed)


def _tool_called(e: ToolCalled, seen: Observed) -> ExpectationOutcome:
    negate = isinstance(e, NoToolCalled)
    calls = [c for c in seen.tool_calls if e.tool is None or c.name == e.tool]
    if not calls:
        names = ", ".join(sorted({c.name for c in seen.tool_calls}))
        other = f" (other tools called: {names})" if names else ""
        return _outcome(e, negate, None, f"no call of {e.tool or 'any tool'}{other}")
    call = calls[0]
    assert call.stamp is not None
    result = seen.tool_results.get(call.call_id)
    if result is None:
        answer = "no result"
    elif result.ok:
        answer = f"ok {result.value!r} after {_ms(result.elapsed)}"
    else:
        answer = f"failed: {result.error}"
    more = f" and {len(calls) - 1} more call(s)" if len(calls) > 1 else ""
    observed = f"{call.name} called at {_s(call.stamp.time)} ({call.call_id}, {answer}){more}"
    return _outcome(e, not negate, call.stamp.time, observed + (" (it must not be)" if negate else ""))
