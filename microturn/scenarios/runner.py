"""The virtual-time runner: one scenario, or a folder of them, in lockstep.

A scenario's session is the live loop — clock, perception, dialog state, interaction (the scenario's model
backend), output mixer — plus the scenario's world: the scripted doubles of the tool runner and background
reasoner (:mod:`microturn.scenarios.scripted_world`), or, as ``[world]`` asks, the live loop's real tool runner
with the built-in tools and the background actor with the offline planner.
The :class:`~microturn.scenarios.triggers.Director` feeds the timeline in through ``Session.schedule`` (source
``scenario``) and leaves the ``USER_EVENT_MARKS`` marks; when the session has run for the scenario's
``duration``, the expectations are judged from the messages and the metrics computed from them.

A recording of a scenario names ``microturn.scenarios.runner:build_actors`` and carries the scenario itself
(as plain data) in its header, so ``microturn replay`` rebuilds the same actors with no file at hand, and
replays the scenario's inputs from their recorded times: bit for bit.

Everything here is a function of the scenario: the same run twice gives the same messages, the same
recording bytes and the same printed text (nothing printed depends on the wall clock).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microturn.messages import (
    BackgroundUpdate,
    Delegate,
    DialogState,
    Interrupt,
    Mark,
    Message,
    ToolCall,
    ToolResult,
)
from microturn.runtime import Actor, Recording, RecordingHeader, open_session, run_lockstep

from .expectations import Observed, judge, observe
from .format import TICK_PERIOD, Scenario, ScenarioError, decode_scenario, encode_scenario, load_scenario
from .outcome import ExpectationOutcome
from .triggers import Director, Fired, Plan, prepare_plans

__all__ = [
    "MODELS",
    "FACTORY",
    "ScenarioResult",
    "SuiteResult",
    "build_actors",
    "make_backend",
    "run",
    "run_scenario",
    "run_suite",
    "format_result",
    "format_suite",
]

FACTORY = "microturn.scenarios.runner:build_actors"
"""The actor factory scenario recordings name (``microturn replay`` calls it with the header's params)."""


def _scripted(options: dict[str, Any]) -> Any:
    from microturn.model.scripted import ScriptedPolicy

    return ScriptedPolicy(**options)


def _local(options: dict[str, Any]) -> Any:
    checkpoint = options.pop("checkpoint", None)
    if not checkpoint:
        raise ValueError("the local model needs a checkpoint: --model local:PATH, or [model] options.checkpoint")
    try:
        from microturn.model.local import LocalBackend
    except ImportError as exc:
        raise ValueError(f"the trained model needs torch (pip install 'microturn[torch]'), or choose "
                         f"--model scripted: {exc}") from None
    return LocalBackend(checkpoint, **options)


def _embedded(options: dict[str, Any]) -> Any:
    from microturn.model.weights import EMBEDDED_CHECKPOINT

    if not EMBEDDED_CHECKPOINT.is_file():
        raise ValueError(f"the shipped checkpoint {EMBEDDED_CHECKPOINT} is missing (a damaged install?); "
                         "use --model scripted, or local:PATH for another checkpoint")
    return _local({**options, "checkpoint": EMBEDDED_CHECKPOINT})


def _sglang(mode: str) -> Callable[[dict[str, Any]], Any]:
    def make(options: dict[str, Any]) -> Any:
        url = options.pop("url", None)
        if not url:
            raise ValueError(f"the {'sglang' if mode == 'native' else 'sglang-text'} model needs a server URL: "
                             "--model sglang --url URL, --model sglang:URL, or [model] options.url")
        from microturn.model.sglang import SglangBackend

        return SglangBackend(url, mode=mode, **options)

    return make


MODELS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "embedded": _embedded,
    "scripted": _scripted,
    "local": _local,
    "sglang": _sglang("native"),
    "sglang-text": _sglang("text"),
}
"""Interaction backends by name: each makes a backend from the scenario's ``[model] options``. A name may
carry its argument after a colon: ``local:PATH`` (the checkpoint), ``sglang:URL`` / ``sglang-text:URL`` (an
sglang or ``microturn serve`` server; ``sglang-text`` goes through the text bridge). ``embedded``, the
default, is the shipped checkpoint."""

MODEL_ARGUMENT = {"local": "checkpoint", "sglang": "url", "sglang-text": "url"}
"""Which option the part after ``NAME:`` sets."""


def _model_name(spec: str) -> tuple[str, dict[str, Any]]:
    """``"local:PATH"`` -> ``("local", {"checkpoint": "PATH"})``, ``"sglang:URL"`` -> ``("sglang", {"url":
    "URL"})``; a plain name has no options."""
    name, sep, argument = spec.partition(":")
    return name, ({MODEL_ARGUMENT.get(name, "checkpoint"): argument} if sep else {})


def make_backend(name: str, options: dict[str, Any] | None = None) -> Any:
    """The interaction backend called ``name``; errors name the model and list the known ones."""
    spec = name
    name, extra = _model_name(spec)
    factory = MODELS.get(name)
    if factory is None:
        raise ScenarioError(f"unknown model; known: {', '.join(sorted(MODELS))}", key="model.name", value=spec)
    try:
        return factory({**(options or {}), **extra})
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: a checkpoint that does not load
        raise ScenarioError(f"the {name} model refuses these options: {exc}", key="model.options",
                            value=options) from None


def build_actors(
    *, scenario: dict[str, Any], model: str | None = None, render_audio: bool = False, wav_path: str | None = None
) -> list[Actor]:
    """The actors of a scenario's session (what replay rebuilds from a recording's header).

    ``scenario`` is the scenario as plain data (:func:`~microturn.scenarios.format.encode_scenario`);
    ``model`` overrides its model (the scenario's options then apply only if it names the same model);
    ``render_audio`` makes the mixer voice the assistant (espeak-ng), ``wav_path`` writes the session's
    stereo WAV when it stops."""
    from microturn.actors import (
        ClockActor,
        DialogStateActor,
        DialogTimings,
        InteractionActor,
        OutputMixer,
        PerceptionActor,
    )
    from microturn.model.protocol import ModelSpec

    sc = decode_scenario(scenario)
    name = model or sc.model.name
    backend = make_backend(name, sc.model.options if name == sc.model.name else {})
    spec = ModelSpec(outputs_per_tick=sc.model.outputs_per_tick, seed=sc.model.seed)
    timings = DialogTimings.from_seconds(TICK_PERIOD, **sc.dialog) if sc.dialog else None
    tool_names, world = _world(sc)
    return [
        ClockActor(),
        PerceptionActor(),
        DialogStateActor(timings),
        InteractionActor(backend, spec, tools=tool_names),
        OutputMixer(render_audio=render_audio, wav_path=wav_path),
        *world,
    ]


def _world(sc: Scenario) -> tuple[list[str], list[Actor]]:
    """The tool names the assistant is offered, and the actors that answer its delegated tasks and tool calls
    (``[world]``: the scripted doubles, or the live loop's real tool runner and offline planner)."""
    from .scripted_world import DEFAULT_TOOLS, ScriptedBackground, ScriptedToolRunner

    if sc.world.tools == "scripted":
        behaviours = sc.tools or list(DEFAULT_TOOLS)
        return [t.name for t in behaviours], [
            ScriptedBackground(sc.background, name="background"),
            ScriptedToolRunner(behaviours, name="tool_runner"),
        ]
    from microturn.actors import BackgroundActor, OfflinePlanner, ToolRunner
    from microturn.tools import default_registry

    registry = default_registry(http=())  # no host is allowed: a scenario never reaches the network
    background: Actor = (
        BackgroundActor(OfflinePlanner(), tools=registry, name="background")  # one registry, as in the live loop
        if sc.world.background == "offline"
        else ScriptedBackground(sc.background, name="background")
    )
    return registry.names(), [background, ToolRunner(registry, name="tool_runner")]


@dataclass
class ScenarioResult:
    """What a scenario run came to: its messages (and an in-memory recording of them), the events fired, the
    expectations judged, and the metrics (None when the metrics module is not available)."""

    scenario: Scenario
    model: str
    messages: list[Message]
    outcomes: list[ExpectationOutcome]
    fired: list[Fired]
    not_fired: list[tuple[int, str]]
    recording: Recording
    metrics: Any = None
    path: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every expectation held."""
        return all(o.ok for o in self.outcomes)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """The expectations that failed."""
        return [o for o in self.outcomes if not o.ok]

    @property
    def observed(self) -> Observed:
        """The messages digested (utterances as heard, occurrences, tools, background)."""
        return observe(self.messages)


def _compute_metrics(messages: Sequence[Message]) -> Any:
    try:
        from .metrics import compute_metrics
    except ImportError:  # built in parallel; the runner works without it
        return None
    return compute_metrics(messages, tick_period=TICK_PERIOD)


async def run(
    scenario: Scenario,
    *,
    model: str | None = None,
    record: str | os.PathLike[str] | None = None,
    wav: str | os.PathLike[str] | None = None,
    plans: Sequence[Plan] | None = None,
    path: str | None = None,
) -> ScenarioResult:
    """Run ``scenario`` inside an already running trio with a MockClock (pytest-trio's ``autojump_clock``, or
    :func:`microturn.runtime.run_lockstep`). ``plans`` are the prepared timeline (prepared here if not given:
    speech synthesis runs then, off the session's clock)."""
    name = model or scenario.model.name
    params = {"scenario": encode_scenario(scenario), "model": name, "render_audio": wav is not None}
    actors = build_actors(**params, wav_path=os.fspath(wav) if wav is not None else None)
    plans = list(plans) if plans is not None else prepare_plans(scenario)
    director = Director(scenario, plans)
    messages: list[Message] = []
    meta = {
        "scenario": scenario.name,
        "category": scenario.category,
        "tags": list(scenario.tags),
        "description": scenario.description,
    }
    async with open_session(
        actors,
        mode="lockstep",
        tick_period=TICK_PERIOD,
        session_id=scenario.name,
        record=record,
        factory=FACTORY,
        params=params,
        meta=meta,
        taps=[messages.append, director.observe],
    ) as session:
        director.attach(session)
        await session.run_for(scenario.duration)
        stats = session.stats()
    outcomes = judge(scenario, messages, event_times=director.event_times())
    header = RecordingHeader(
        session_id=scenario.name,
        mode="lockstep",
        tick_period=TICK_PERIOD,
        actors=[a.name for a in actors],
        factory=FACTORY,
        params=params,
        meta=meta,
    )
    recording = Recording(path=os.fspath(record) if record is not None else "<memory>", header=header,
                          messages=list(messages))  # type: ignore[arg-type]
    return ScenarioResult(
        scenario=scenario,
        model=name,
        messages=messages,
        outcomes=outcomes,
        fired=sorted(director.fired.values(), key=lambda f: (f.start, f.index)),
        not_fired=director.not_fired(),
        recording=recording,
        metrics=_compute_metrics(messages),
        path=path,
        stats=stats,
    )


def run_scenario(
    scenario: Scenario | str | os.PathLike[str],
    *,
    model: str | None = None,
    record: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    wav: str | os.PathLike[str] | None = None,
) -> ScenarioResult:
    """Load (if given a path) and run a scenario in lockstep virtual time; write the recording, the HTML
    report and the session's stereo WAV when asked. Raises :class:`ScenarioError` for a bad scenario."""
    path = None
    if not isinstance(scenario, Scenario):
        path = os.fspath(scenario)
        scenario = load_scenario(path)
    if model is not None and _model_name(model)[0] not in MODELS:
        raise ScenarioError(f"unknown model; known: {', '.join(sorted(MODELS))}", key="--model", value=model)
    try:
        plans = prepare_plans(scenario)
    except ScenarioError as exc:
        if path is None:
            raise
        raise exc.located(path, None) from None
    result = run_lockstep(lambda: run(scenario, model=model, record=record, wav=wav, plans=plans, path=path))
    if report is not None:
        from .report import write_report

        title = f"{scenario.name} ({scenario.category})"
        write_report(report, result.recording, result.outcomes, result.metrics, title=title)
    return result


@dataclass
class SuiteResult:
    """The results of a folder of scenarios, and the files that could not be run (with why)."""

    directory: str
    results: list[ScenarioResult]
    errors: list[tuple[str, str]]

    @property
    def ok(self) -> bool:
        """Whether every scenario loaded and every expectation held."""
        return not self.errors and all(r.ok for r in self.results)


def scenario_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The ``*.toml`` files under ``directory`` (recursively), in a fixed order."""
    root = Path(directory)
    if not root.is_dir():
        raise ScenarioError("not a folder of scenarios", file=root)
    return sorted(p for p in root.rglob("*.toml") if p.is_file())


def run_suite(
    directory: str | os.PathLike[str],
    *,
    model: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> SuiteResult:
    """Run every scenario under ``directory``; ``progress(done, total, name)`` is called before each one and
    once at the end. A scenario that fails to load is reported in ``errors``; the others still run."""
    files = scenario_files(directory)
    results: list[ScenarioResult] = []
    errors: list[tuple[str, str]] = []
    for i, file in enumerate(files):
        if progress is not None:
            progress(i, len(files), file.stem)
        try:
            results.append(run_scenario(file, model=model))
        except ScenarioError as exc:
            errors.append((os.fspath(file), str(exc)))
    if progress is not None:
        progress(len(files), len(files), "")
    return SuiteResult(os.fspath(directory), results, errors)


# --- printing -----------------------------------------------------------------------------------------------------


def _quote(text: str, limit: int = 70) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f'"{text}"'


def timeline_lines(result: ScenarioResult) -> list[str]:
    """The compact timeline: user events, marks, dialog states, what the assistant said as heard, tools and
    background work, in time order."""
    rows: list[tuple[float, int, str, str]] = []
    end = result.scenario.duration
    for fired in result.fired:
        late = " — after the end of the session" if fired.start > end else ""
        rows.append((fired.start, -1, "user", f"{fired.label}  [{fired.cause}]{late}"))
    seen = observe(result.messages)
    for u in seen.utterances:
        when = u.first_word if u.first_word is not None else u.started
        kind = "backchannel " if u.backchannel else ""
        if u.truncated or u.reason == "interrupted":
            tail = f"  (cut at {u.sound_end if u.sound_end is not None else when:.3f} s: {u.cut_reason or 'interrupted'})"
        elif u.heard is None:
            tail = "  (still speaking at the end)"
        else:
            tail = ""
        text = _quote(u.text) if u.text else "(nothing heard)"
        rows.append((when, u.seq, "assistant", f"{kind}{text}{tail}"))
    for m in result.messages:
        stamp = m.stamp
        if stamp is None:
            continue
        what = None
        who = ""
        match m:
            case Mark(name=name):
                who, what = "mark", name
            case DialogState(floor=floor, user=user, assistant=assistant):
                who, what = "dialog", f"user {user}, assistant {assistant}, floor {floor}"
            case ToolCall(call_id=call_id, name=name, args=args):
                who, what = "tool", f"call {call_id} {name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
            case ToolResult(call_id=call_id, ok=ok, value=value, error=error):
                who, what = "tool", f"result {call_id}: " + (f"ok {value!r}" if ok else f"failed: {error}")
            case Delegate(task_id=task_id, goal=goal):
                who, what = "background", f"delegate {task_id}: {_quote(goal)}"
            case BackgroundUpdate(task_id=task_id, status=status, text=text, delivery=delivery):
                who, what = "background", f"{status} {task_id} ({delivery})" + (f": {_quote(text)}" if text else "")
            case Interrupt(generation=g, reason=reason):
                who, what = "control", f"interrupt generation {g} ({reason or 'no reason'})"
        if what is not None:
            rows.append((stamp.time, stamp.seq, who, what))
    rows.sort(key=lambda r: (r[0], r[1]))
    lines = [f"{'time(s)':>8}  {'who':<10} what"]
    lines += [f"{t:8.3f}  {who:<10} {what}" for t, _, who, what in rows]
    for index, cause in result.not_fired:
        event = result.scenario.timeline[index]
        label = event.id or f"timeline[{index}]"
        lines.append(f"{'never':>8}  {'user':<10} {label} ({type(event).__name__.lower()}) did not happen: "
                     f"waiting for {cause}")
    return lines


def format_result(result: ScenarioResult) -> str:
    """The text ``microturn run`` prints for one scenario: header, timeline, metrics, expectations, verdict."""
    sc = result.scenario
    tags = f", tags {', '.join(sc.tags)}" if sc.tags else ""
    out = [
        f"scenario {sc.name} ({sc.category}{tags}): model {result.model}, {sc.duration:g} s of virtual time, "
        f"{result.stats.get('messages', len(result.messages))} messages",
    ]
    if sc.description:
        out.append(f"  {sc.description}")
    out.append("")
    out += timeline_lines(result)
    out.append("")
    if result.metrics is not None:
        try:
            from .metrics import format_metrics

            out.append(format_metrics(result.metrics))
        except ImportError:
            pass
        out.append("")
    held = sum(o.ok for o in result.outcomes)
    out.append(f"expectations: {held} of {len(result.outcomes)} held")
    for o in result.outcomes:
        out.append(f"  {'PASS' if o.ok else 'FAIL'}  {o.name}: {o.observed}")
    if result.ok:
        out.append(f"PASS {sc.name}")
    else:
        failures = "; ".join(f"{o.name}: {o.observed}" for o in result.failures)
        out.append(f"FAIL {sc.name}: {len(result.failures)} of {len(result.outcomes)} expectations failed: {failures}")
    return "\n".join(out)


def _figure(metrics: Any, name: str) -> str:
    value = getattr(metrics, name, None) if metrics is not None else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}"


def format_suite(suite: SuiteResult) -> str:
    """One table per category (scenario, verdict, expectations held, response and stop latency, first
    failure), then the files that could not run and a summary line."""
    by_category: dict[str, list[ScenarioResult]] = {}
    for r in suite.results:
        by_category.setdefault(r.scenario.category, []).append(r)
    out: list[str] = []
    for category in sorted(by_category):
        rows = sorted(by_category[category], key=lambda r: r.scenario.name)
        width = max(24, *(len(r.scenario.name) for r in rows))
        passed = sum(r.ok for r in rows)
        out.append(f"{category}: {passed} of {len(rows)} passed")
        out.append(f"  {'scenario':<{width}}  {'result':<6} {'checks':>6} {'reply s':>8} {'stop s':>7}  first failure")
        for r in rows:
            held = f"{sum(o.ok for o in r.outcomes)}/{len(r.outcomes)}"
            first = next((f"{o.name}: {o.observed}" for o in r.outcomes if not o.ok), "")
            first = first if len(first) <= 100 else first[:99] + "…"
            out.append(
                f"  {r.scenario.name:<{width}}  {'PASS' if r.ok else 'FAIL':<6} {held:>6} "
                f"{_figure(r.metrics, 'response_latency_s'):>8} {_figure(r.metrics, 'stop_latency_s'):>7}  {first}"
            )
        out.append("")
    for file, error in suite.errors:
        out.append(f"ERROR {file}: {error}")
    if suite.errors:
        out.append("")
    failed = sum(not r.ok for r in suite.results)
    virtual = sum(r.scenario.duration for r in suite.results)
    out.append(
        f"suite {suite.directory}: {len(suite.results) + len(suite.errors)} scenarios, "
        f"{len(suite.results) - failed} passed, {failed} failed, {len(suite.errors)} could not run; "
        f"{virtual:g} s of virtual time"
    )
    return "\n".join(out)
