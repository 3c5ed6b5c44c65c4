"""Closed-loop quality of an interaction model on held-out randomized dialogs, beside the oracle's own.

Each held-out dialog (:func:`~microturn.training.dialogs.generate_dialogs` with ``heldout=True``: seeds disjoint
from any training corpus) runs as a scenario in lockstep, once per model, with the model in the loop: what it
says is played out, heard, interrupted, and shapes the dialog state it sees next. The scenario metrics of every
session are pooled per event:

* **response latency**: median over smooth turn ends (end of the user's turn to the assistant's first audio);
* **stop latency**: median over barge-ins (how long the assistant kept talking over the user);
* **takeover on pauses**: the fraction of the user's thinking pauses the assistant talked into;
* **control agreement**: per tick, the model's control set against a *shadow oracle* — the scripted policy fed
  the very same inputs the model got, so it says what the oracle would have decided on the model's own
  trajectory (the DAgger labelling; open-loop agreement on the oracle's trajectory is
  :func:`~microturn.training.train.evaluate_sessions`);
* **content exact**: the share of tool results and final (non-silent) background results whose words the
  assistant then said verbatim (a ``set_timer`` result says nothing until the timer fires, so it is not counted);
* **invented facts**: numbers the assistant said that no input held (the user's words, a tool's value or
  arguments, a background result, an image's patch count), plus delegated goals with a word the user never said;
* **expectations**: the dialog scenarios' own checks are not used (generated dialogs carry none); the scenario
  library's turn-taking expectations are checked by the tests on the committed checkpoint.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from microturn.messages import BackgroundUpdate, Delegate, InputChunk, OutputChunk, ToolCall, ToolResult
from microturn.model.protocol import ModelSpec, StepInput, StepOutput
from microturn.model.references import render_value

__all__ = ["ContentTally", "ModelQuality", "ShadowOracleBackend", "content_tally", "format_quality", "measure_quality"]

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_WORD = re.compile(r"[\w']+")


@dataclass
class ContentTally:
    """What one or more sessions said against what they were given (see the module docstring)."""

    results: int = 0
    verbatim: int = 0
    invented: int = 0
    examples: list[str] = field(default_factory=list)
    """The first few invented facts, for the report."""

    def add(self, other: ContentTally) -> None:
        """Pool another tally into this one."""
        self.results += other.results
        self.verbatim += other.verbatim
        self.invented += other.invented
        self.examples += other.examples[: max(0, 5 - len(self.examples))]


def content_tally(messages: Sequence[Any]) -> ContentTally:
    """Count results spoken verbatim and facts invented in one session's messages (in bus order)."""
    tally = ContentTally()
    known: set[str] = set()
    user_words: set[str] = set()
    names: dict[str, str] = {}
    spoken_after: list[tuple[int, str]] = []  # (index of the result, its words) still to be heard
    said: list[str] = []
    for message in messages:
        match message:
            case InputChunk(text=text, n_patches=patches):
                known.update(_NUMBER.findall(text))
                user_words.update(w.lower() for w in _WORD.findall(text))
                known.add(str(patches))
            case ToolCall(call_id=call_id, name=name, args=args):
                names[call_id] = name
                known.update(_NUMBER.findall(str(args)))
            case ToolResult(call_id=call_id, ok=True, value=value):
                words = render_value(value)
                known.update(_NUMBER.findall(words) + _NUMBER.findall(str(value)))
                if names.get(call_id, call_id.rsplit("-", 1)[0]) != "set_timer":
                    spoken_after.append((len(said), " ".join(words.split())))
            case BackgroundUpdate(status="final", text=text, delivery=delivery) if text.strip():
                known.update(_NUMBER.findall(text))
                if delivery != "silent":
                    spoken_after.append((len(said), " ".join(text.split())))
            case Delegate(goal=goal):
                if any(w.lower() not in user_words for w in _WORD.findall(goal)):
                    tally.invented += 1
                    tally.examples.append(f"goal {goal!r}")
            case OutputChunk(text=text) if text:
                said.append(text)
                for number in _NUMBER.findall(text):
                    if number not in known:
                        tally.invented += 1
                        tally.examples.append(f"number {number} in {text!r}")
    for start, words in spoken_after:
        tally.results += 1
        tally.verbatim += words in " ".join(said[start:])
    tally.examples = tally.examples[:5]
    return tally


@dataclass
class _Agreement:
    ticks: int = 0
    agree: int = 0


class _ShadowSession:
    """Steps the model's session and, on the same input, the oracle's; counts control-set agreement."""

    def __init__(self, inner: Any, oracle: Any, tally: _Agreement) -> None:
        self.inner, self.oracle, self.tally = inner, oracle, tally
        self.blocking = getattr(inner, "blocking", False)

    def _count(self, step_input: StepInput, output: StepOutput) -> StepOutput:
        want = self.oracle.step_sync(step_input)
        self.tally.ticks += 1
        self.tally.agree += frozenset(want.controls) == frozenset(output.controls)
        return output

    def step_sync(self, step_input: StepInput) -> StepOutput:
        """The model's step; the oracle's answer to the same input is only counted."""
        return self._count(step_input, self.inner.step_sync(step_input))

    async def step(self, step_input: StepInput) -> StepOutput:
        """The model's step; the oracle's answer to the same input is only counted."""
        return self._count(step_input, await self.inner.step(step_input))

    async def close(self) -> None:
        """Close both sessions."""
        await self.inner.close()
        await self.oracle.close()


class ShadowOracleBackend:
    """A backend that runs ``inner`` and shadows every session with the scripted oracle (same spec and seed),
    tallying per-tick agreement of the control sets in ``tally`` (shared when given, to pool sessions)."""

    def __init__(self, inner: Any, oracle_options: dict[str, Any] | None = None, *,
                 tally: _Agreement | None = None) -> None:
        from microturn.model.scripted import ScriptedPolicy

        self.inner = inner
        self.oracle = ScriptedPolicy(**(oracle_options or {}))
        self.name = f"shadowed:{getattr(inner, 'name', 'model')}"
        self.tally = tally if tally is not None else _Agreement()

    async def open_session(self, spec: ModelSpec) -> _ShadowSession:
        """Open the model's session and the oracle's beside it."""
        return _ShadowSession(await self.inner.open_session(spec), await self.oracle.open_session(spec), self.tally)


@dataclass
class ModelQuality:
    """Pooled closed-loop figures of one model over the held-out dialogs."""

    model: str
    dialogs: int
    ticks: int
    control_agreement: float
    response_latency_s: float | None
    stop_latency_s: float | None
    takeover_pause: float | None
    takeover_backchannel: float | None
    takeover_turn: float | None
    turn_ends: int
    barge_ins: int
    pauses: int
    content_exact: float | None = None
    invented_facts: int = 0
    results: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        """The figures as plain data (for JSON)."""
        return {k: v for k, v in self.__dict__.items() if k != "extra"} | self.extra


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def _rate(values: Sequence[bool | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 3) if vals else None


def measure_quality(
    model: str,
    *,
    seed: int = 0,
    dialogs: int = 40,
    progress: Callable[[int, int], None] | None = None,
    **dialog_options: Any,
) -> ModelQuality:
    """Run ``dialogs`` held-out dialogs of corpus ``seed`` with ``model`` (a runner model name such as
    ``scripted`` or ``local:PATH``) in the loop; pool their metrics and the shadow oracle's agreement."""
    from microturn.scenarios.format import TICK_PERIOD
    from microturn.scenarios.metrics import compute_metrics

    from .corpus import run_dialog
    from .dialogs import generate_dialogs

    events: list[Any] = []
    tally = _Agreement()
    content = ContentTally()
    done = 0
    for dialog in generate_dialogs(seed, dialogs, heldout=True, **dialog_options):
        options = dialog.scenario.model.options
        _, messages = run_dialog(dialog, keep_messages=True, model=model,
                                 wrap=lambda backend, o=options: ShadowOracleBackend(backend, o, tally=tally))
        events += compute_metrics(messages, tick_period=TICK_PERIOD).events
        content.add(content_tally(messages))
        done += 1
        if progress is not None:
            progress(done, dialogs)

    def of(kind: str) -> list[Any]:
        return [e for e in events if e.kind == kind]

    return ModelQuality(
        model=model,
        dialogs=done,
        ticks=tally.ticks,
        control_agreement=round(tally.agree / max(tally.ticks, 1), 4),
        response_latency_s=_median([e.latency for e in of("turn_end")]),
        stop_latency_s=_median([e.stop_latency for e in of("barge_in")]),
        takeover_pause=_rate([e.takeover for e in of("pause")]),
        takeover_backchannel=_rate([e.takeover for e in of("backchannel")]),
        takeover_turn=_rate([e.takeover for e in of("turn_end")]),
        turn_ends=len(of("turn_end")),
        barge_ins=len(of("barge_in")),
        pauses=len(of("pause")),
        content_exact=round(content.verbatim / content.results, 4) if content.results else None,
        invented_facts=content.invented,
        results=content.results,
        extra={"phrasings": dialog_options.get("phrasings", "heldout"),
               **({"invented_examples": content.examples} if content.examples else {})},
    )


HELDOUT_KINDS = {"heldout_dialogs": "train", "heldout_phrasings": "heldout"}
"""The two held-out evaluations and the phrasing split each uses: held-out dialog seeds with the training
phrasings (new combinations, timings, slot values), and held-out seeds with phrasings training never saw."""


def measure_heldout_kinds(model: str, *, seed: int = 0, dialogs: int = 40, **options: Any) -> dict[str, ModelQuality]:
    """:func:`measure_quality` over both held-out kinds of :data:`HELDOUT_KINDS`, keyed by kind."""
    return {kind: measure_quality(model, seed=seed, dialogs=dialogs, phrasings=phrasings, **options)
            for kind, phrasings in HELDOUT_KINDS.items()}


_ROWS = (
    ("response_latency_s", "median response latency (s)", "≤ 0.40"),
    ("stop_latency_s", "median stop latency (s)", "≤ 0.20"),
    ("takeover_pause", "takeover on thinking pauses", "≤ 10 %"),
    ("control_agreement", "per-tick control agreement with the oracle", "≥ 95 %"),
    ("content_exact", "tool/background results spoken verbatim", "≥ 99 %"),
    ("invented_facts", "invented facts (numbers, goals)", "0"),
    ("takeover_turn", "takeover on smooth turn ends", "high"),
    ("takeover_backchannel", "takeover on backchannels", "low"),
)


def format_quality(results: Sequence[ModelQuality]) -> str:
    """A Markdown table: one row per figure, one column per model, plus the issue's target."""

    def cell(value: Any, key: str) -> str:
        if value is None:
            return "—"
        if key == "invented_facts":
            return str(value)
        if key.startswith(("takeover", "control", "content")):
            return f"{100 * value:.1f} %"
        return f"{value:.2f}"

    head = "| figure | " + " | ".join(r.model for r in results) + " | target |"
    lines = [head, "|" + " --- |" * (len(results) + 2)]
    for key, label, target in _ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(getattr(r, key), key) for r in results) + f" | {target} |")
    counts = ", ".join(f"{r.model}: {r.dialogs} dialogs, {r.ticks} ticks, {r.turn_ends} turn ends, "
                       f"{r.barge_ins} barge-ins, {r.pauses} pauses" for r in results)
    return "\n".join(lines) + f"\n\n({counts})"
