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

import msgspec

from microturn.actors import BackgroundActor, OfflinePlanner, ToolRunner
from microturn.assembly import (
    BACKENDS,
    BackendError,
    PipelineSpec,
    World,
    build_pipeline,
    make_backend,
    require_allowed,
    resolve_module_spec,
    tool_registry,
)
from microturn.extras import MissingExtra
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
from microturn.runtime import Actor, MicroturnError, Recording, RecordingHeader, open_session, run_lockstep

from .expectations import Observed, observe
from .expectations import judge as judge_expectations
from .format import (
    TICK_PERIOD,
    Judged,
    Scenario,
    ScenarioError,
    ToolCalled,
    decode_scenario,
    encode_scenario,
    load_scenario,
)
from .judge import Judge, judge_from_env, verdicts
from .outcome import ExpectationOutcome
from .scripted_world import DEFAULT_TOOLS, ScriptedBackground, ScriptedToolRunner
from .simulator import simulated_runs
from .triggers import Director, Fired, Plan, prepare_plans

__all__ = [
    "FACTORY",
    "ScenarioResult",
    "SuiteResult",
    "build_actors",
    "run",
    "run_scenario",
    "run_suite",
    "format_result",
    "format_suite",
]

RECOGNIZERS = ("none", "pocketsphinx")
"""The speech recognizers a run may add (``PipelineSpec.recognizer``)."""

FACTORY = "microturn.scenarios.runner:build_actors"
"""The actor factory scenario recordings name (``microturn replay`` calls it with the header's params)."""


def build_actors(
    *,
    scenario: dict[str, Any],
    model: str | None = None,
    render_audio: bool = False,
    wav_path: str | None = None,
    actors: Sequence[str] = (),
    recognizer: str = "none",
) -> list[Actor]:
    """The actors of a scenario's session (what replay rebuilds from a recording's header).

    ``scenario`` is the scenario as plain data (:func:`~microturn.scenarios.format.encode_scenario`);
    ``model`` overrides its model (the scenario's options then apply only if it names the same model);
    ``render_audio`` makes the mixer voice the assistant (espeak-ng), ``wav_path`` writes the session's
    stereo WAV when it stops; ``actors`` are ``MODULE:FACTORY`` plugins; ``recognizer`` ``"pocketsphinx"`` adds
    the speech recognizer, which gives ``say`` speech sent without its transcript its words. The tool modules and actors named are
    imported only when allowed (:func:`microturn.assembly.allow_plugins`): replay runs no code a recording names."""
    sc = decode_scenario(scenario)
    require_allowed(sc.world.tool_modules, actors)
    return _build(sc, model=model, render_audio=render_audio, wav_path=wav_path, actors=actors, recognizer=recognizer)


def _build(sc: Scenario, *, model: str | None, render_audio: bool = False, wav_path: str | None = None,
           actors: Sequence[str] = (), recognizer: str = "none") -> list[Actor]:
    """The scenario's pipeline, through the one assembly; the scenario's world plugs into it."""
    name = model or sc.model.name
    key = "--model" if model else "model.name"
    try:
        backend = make_backend(name, sc.model.options if name == sc.model.name else {}, key=key)
        spec = PipelineSpec(
            model=name,
            outputs_per_tick=sc.model.outputs_per_tick,
            seed=sc.model.seed,
            dialog=dict(sc.dialog),
            tool_modules=list(sc.world.tool_modules),
            http_allow=[],  # no host is allowed: a scenario never reaches the network
            render_audio=render_audio,
            wav_path=wav_path,
            actors=list(actors),
            recognizer=recognizer,  # type: ignore[arg-type]
        )
        world = _scripted_world(sc) if sc.world.tools == "scripted" else _real_world(sc, spec)
        _check_tool_names(sc, world.tool_names)
        return build_pipeline(spec, backend=backend, world=world, tick_period=TICK_PERIOD)
    except BackendError as exc:
        raise ScenarioError(exc.reason, key=exc.key, value=exc.value) from None
    except MissingExtra:  # the command line prints it as is: which extra to install
        raise
    except MicroturnError as exc:  # a plugin that does not load: its message names the flag and the value
        raise ScenarioError(str(exc)) from None


def _check_tool_names(sc: Scenario, offered: Sequence[str]) -> None:
    """An expectation about a tool the session does not offer could never hold (or always would): refuse it."""
    for i, expectation in enumerate(sc.expect):
        name = getattr(expectation, "tool", None)
        if isinstance(expectation, ToolCalled) and name is not None and name not in offered:
            raise ScenarioError(f"unknown tool; this session offers: {', '.join(offered) or 'none'}",
                                key=f"expect[{i}].tool", value=name)


def with_tool_modules(scenario: Scenario, tools: Sequence[str]) -> Scenario:
    """``scenario`` with more tool modules (``--tools``: dotted names, or files relative to the working folder)."""
    if not tools:
        return scenario
    if scenario.world.tools != "builtin":
        raise ScenarioError('--tools adds tools to the real tool runner: the scenario needs [world] tools = "builtin"',
                            key="--tools", value=list(tools))
    extra = [resolve_module_spec(t) for t in tools]
    world = msgspec.structs.replace(scenario.world, tool_modules=[*scenario.world.tool_modules, *extra])
    return msgspec.structs.replace(scenario, world=world)


def _scripted_world(sc: Scenario) -> World:
    """The scripted doubles of the tool runner and the background reasoner, as the scenario scripts them."""
    behaviours = sc.tools or list(DEFAULT_TOOLS)
    return World([t.name for t in behaviours], [
        ScriptedBackground(sc.background, name="background"),
        ScriptedToolRunner(behaviours, name="tool_runner"),
    ])


def _real_world(sc: Scenario, spec: PipelineSpec) -> World:
    """The live loop's real tool runner (built-in tools plus the scenario's tool modules), and the offline
    planner on the same registry, or the scripted reasoner (``[world] background``)."""
    registry = tool_registry(spec)
    background: Actor = (
        BackgroundActor(OfflinePlanner(), tools=registry, name="background")
        if sc.world.background == "offline"
        else ScriptedBackground(sc.background, name="background")
    )
    return World(registry.names(), [background, ToolRunner(registry, name="tool_runner")])


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
        """Whether every expectation held (one not judged did not: see :attr:`verdict`)."""
        return all(o.ok for o in self.outcomes)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """The expectations that failed (not those that were not judged)."""
        return [o for o in self.outcomes if not o.ok and o.judged]

    @property
    def not_judged(self) -> list[ExpectationOutcome]:
        """The judged expectations no judge decided."""
        return [o for o in self.outcomes if not o.judged]

    @property
    def verdict(self) -> str:
        """``pass`` (every expectation held), ``fail`` (one failed), or ``not judged`` (none failed, but a
        judged one was not decided: not a pass)."""
        if self.failures:
            return "fail"
        return "not judged" if self.not_judged else "pass"

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
    tools: Sequence[str] = (),
    actors: Sequence[str] = (),
    judge: Judge | None | str = "env",
    recognizer: str = "none",
) -> ScenarioResult:
    """Run ``scenario`` inside an already running trio with a MockClock (pytest-trio's ``autojump_clock``, or
    :func:`microturn.runtime.run_lockstep`). ``plans`` are the prepared timeline (prepared here if not given:
    speech synthesis runs then, off the session's clock). ``tools`` are more tool modules (``--tools``),
    ``actors`` ``MODULE:FACTORY`` plugins (``--actor``); both go into the recording, so replay needs them named.
    ``recognizer`` (``"none"`` or ``"pocketsphinx"``) goes into the recording too.
    ``judge`` decides judged expectations (``"env"``: the one the environment configures, see
    :mod:`microturn.scenarios.judge`; None: none, they are not judged); its verdicts are published into the
    session at its end, so the recording holds them."""
    scenario = with_tool_modules(scenario, tools)
    if judge == "env":
        judge = _env_judge() if any(isinstance(e, Judged) for e in scenario.expect) else None
    name = model or scenario.model.name
    params: dict[str, Any] = {"scenario": encode_scenario(scenario), "model": name, "render_audio": wav is not None}
    if actors:
        params["actors"] = list(actors)
    if recognizer != "none":  # only when chosen: recordings made without it keep their params
        params["recognizer"] = recognizer
    built = _build(scenario, model=model, render_audio=wav is not None,
                   wav_path=os.fspath(wav) if wav is not None else None, actors=actors, recognizer=recognizer)
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
        built,
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
        fired = sorted(director.fired.values(), key=lambda f: (f.start, f.index))
        for verdict in verdicts(judge, scenario, messages, fired):  # type: ignore[arg-type]
            await session.publish(verdict, source="judge")
        stats = session.stats()
    outcomes = judge_expectations(scenario, messages, event_times=director.event_times())
    header = RecordingHeader(
        session_id=scenario.name,
        mode="lockstep",
        tick_period=TICK_PERIOD,
        actors=[a.name for a in built],
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


def _env_judge() -> Judge | None:
    try:
        return judge_from_env()
    except ValueError as exc:
        raise ScenarioError(str(exc), key="MICROTURN_JUDGE_URL") from None


def run_scenario(
    scenario: Scenario | str | os.PathLike[str],
    *,
    model: str | None = None,
    record: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    wav: str | os.PathLike[str] | None = None,
    tools: Sequence[str] = (),
    actors: Sequence[str] = (),
    judge: Judge | None | str = "env",
    recognizer: str = "none",
) -> ScenarioResult:
    """Load (if given a path) and run a scenario in lockstep virtual time; write the recording, the HTML
    report and the session's stereo WAV when asked; ``tools``/``actors`` are plugins, ``judge`` decides
    judged expectations, ``recognizer`` adds the speech recognizer (see :func:`run`).
    Raises :class:`ScenarioError` for a bad scenario."""
    path = None
    if not isinstance(scenario, Scenario):
        path = os.fspath(scenario)
        scenario = load_scenario(path)
    if model is not None and model not in BACKENDS:
        raise ScenarioError(f"unknown model; known: {', '.join(BACKENDS.names())}", key="--model", value=model)
    if recognizer not in RECOGNIZERS:
        raise ScenarioError(f"unknown recognizer; known: {', '.join(RECOGNIZERS)}", key="--recognizer",
                            value=recognizer)
    try:
        plans = prepare_plans(scenario)
    except ScenarioError as exc:
        if path is None:
            raise
        raise exc.located(path, None) from None
    result = run_lockstep(lambda: run(scenario, model=model, record=record, wav=wav, plans=plans, path=path,
                                      tools=tools, actors=actors, judge=judge, recognizer=recognizer))
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
    tools: Sequence[str] = (),
    actors: Sequence[str] = (),
    recognizer: str = "none",
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
            runs = simulated_runs(file)  # a [user] table stands for its seeded runs
            for source in runs if runs is not None else [file]:
                results.append(run_scenario(source, model=model, tools=tools, actors=actors,
                                            recognizer=recognizer))
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
    unjudged = f", {len(result.not_judged)} not judged" if result.not_judged else ""
    out.append(f"expectations: {held} of {len(result.outcomes)} held{unjudged}")
    for o in result.outcomes:
        out.append(f"  {_LABEL[o.verdict]}  {o.name}: {o.observed}")
    if result.verdict == "pass":
        out.append(f"PASS {sc.name}")
    elif result.verdict == "fail":
        failures = "; ".join(f"{o.name}: {o.observed}" for o in result.failures)
        out.append(f"FAIL {sc.name}: {len(result.failures)} of {len(result.outcomes)} expectations failed: {failures}")
    else:
        names = "; ".join(o.name for o in result.not_judged)
        out.append(f"NOT JUDGED {sc.name}: no expectation failed, but {len(result.not_judged)} of "
                   f"{len(result.outcomes)} could not be judged (not a pass): {names}")
    return "\n".join(out)


_LABEL = {"pass": "PASS", "fail": "FAIL", "not judged": "N/J "}


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
            first = next((f"{o.name}: {o.observed}" for o in [*r.failures, *r.not_judged]), "")
            first = first if len(first) <= 100 else first[:99] + "…"
            out.append(
                f"  {r.scenario.name:<{width}}  {_LABEL[r.verdict].strip():<6} {held:>6} "
                f"{_figure(r.metrics, 'response_latency_s'):>8} {_figure(r.metrics, 'stop_latency_s'):>7}  {first}"
            )
        out.append("")
    for file, error in suite.errors:
        out.append(f"ERROR {file}: {error}")
    if suite.errors:
        out.append("")
    failed = sum(r.verdict == "fail" for r in suite.results)
    unjudged = sum(r.verdict == "not judged" for r in suite.results)
    virtual = sum(r.scenario.duration for r in suite.results)
    out.append(
        f"suite {suite.directory}: {len(suite.results) + len(suite.errors)} scenarios, "
        f"{len(suite.results) - failed - unjudged} passed, {failed} failed, "
        + (f"{unjudged} not judged, " if unjudged else "")
        + f"{len(suite.errors)} could not run; {virtual:g} s of virtual time"
    )
    return "\n".join(out)
