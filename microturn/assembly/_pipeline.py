"""The standard pipeline, built from one plain-data description.

clock -> perception -> dialog state -> interaction (the model backend) -> output mixer, with the tool runner
and the background reasoner beside them (or a world of the caller's own: the scenario runner's scripted
doubles), then any plugin actors and the caller's own (a console, a transport). ``run``, ``demo``, ``chat`` and
``corpus`` all build their sessions here, so they cannot drift apart.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from microturn.actors import (
    BackgroundActor,
    ClockActor,
    DialogStateActor,
    DialogTimings,
    InteractionActor,
    OfflinePlanner,
    OutputMixer,
    PerceptionActor,
    ToolRunner,
)
from microturn.actors.dialog_state import DEFAULT_SECONDS
from microturn.asr import RecognizerActor
from microturn.model.protocol import ModelBackend, ModelSpec
from microturn.runtime import Actor, MicroturnError
from microturn.tools import BUILTIN_TOOL_NAMES, Tool, ToolRegistry, default_registry

from ._backends import make_backend
from ._plugins import PluginError, load_tools, make_plugin_actors, resolve_module_spec

__all__ = [
    "DIALOG_TIMINGS",
    "FACTORY",
    "PipelineError",
    "PipelineSpec",
    "World",
    "allow_plugins",
    "build_from_params",
    "build_pipeline",
    "check_dialog_timings",
    "dialog_timing_problem",
    "plugin_key",
    "require_allowed",
    "tool_registry",
]

FACTORY = "microturn.assembly:build_from_params"
"""The actor factory that recordings of assembled sessions (demo, chat) name; replay calls it with the
header's params (a :class:`PipelineSpec` as plain data)."""

DIALOG_TIMINGS: tuple[str, ...] = tuple(DEFAULT_SECONDS)
"""The dialog-state timings a description (or a scenario's ``[dialog]``) may set, in seconds."""


class PipelineError(MicroturnError):
    """A pipeline description that cannot be built; the message names the field and the value."""


class PipelineSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a session's standard pipeline is made of, as plain data (it goes into recordings as is).

    ``model`` is a backend name (``embedded``, ``scripted``, ``local:PATH``, ``sglang:URL`` ...) with
    ``model_options``; ``dialog`` overrides dialog-state timings in seconds; ``tools`` is ``"builtin"`` (the real
    tool runner with the built-in tools plus every ``@tool`` of ``tool_modules``) or ``"none"``;
    ``http_allow`` is ``http_get``'s host allow-list (None: ``MICROTURN_HTTP_ALLOW``); ``background`` is
    ``"offline"`` (the background actor with the offline planner) or ``"none"``; ``actors`` are
    ``MODULE:FACTORY`` plugins; ``render_audio`` voices the assistant, ``wav_path`` writes the session's WAV; ``recognizer`` ``"pocketsphinx"``
    adds the speech recognizer (the ``asr`` extra), whose final words reach the dialog as ``UserText``."""

    model: str = "embedded"
    model_options: dict[str, Any] = {}
    outputs_per_tick: int = 8
    seed: int = 0
    dialog: dict[str, float] = {}
    tools: Literal["builtin", "none"] = "builtin"
    tool_modules: list[str] = []
    http_allow: list[str] | None = None
    background: Literal["offline", "none"] = "offline"
    actors: list[str] = []
    render_audio: bool = False
    wav_path: str | None = None
    recognizer: Literal["none", "pocketsphinx"] = "none"


@dataclass
class World:
    """What answers the assistant's tool calls and delegated tasks when the caller supplies it (the scenario
    runner's scripted doubles): the tool names offered to the model, and the actors."""

    tool_names: list[str]
    actors: list[Actor] = field(default_factory=list)


def dialog_timing_problem(name: str, seconds: Any) -> str | None:
    """Why ``name = seconds`` is not a valid dialog timing (None when it is)."""
    if name not in DEFAULT_SECONDS:
        return f"unknown dialog timing; known: {', '.join(DIALOG_TIMINGS)}"
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 3600:
        return "must be a number of seconds in (0, 3600]"
    return None


def check_dialog_timings(dialog: dict[str, Any], *, key: str = "dialog") -> None:
    """Refuse an unknown timing name or a value that is not a positive number of seconds."""
    for name, seconds in dialog.items():
        problem = dialog_timing_problem(name, seconds)
        if problem:
            raise PipelineError(f"{key}.{name} = {seconds!r}: {problem}")


def tool_registry(spec: PipelineSpec, *, extra: Iterable[Tool] = ()) -> ToolRegistry:
    """The built-in tools, the tools of ``spec.tool_modules`` and ``extra``; a name defined twice is an error."""
    plugin = [*load_tools(spec.tool_modules), *extra]
    clash = [t.name for t in plugin if t.name in BUILTIN_TOOL_NAMES]
    if clash:
        raise PluginError(f"--tools: tool {clash[0]!r} is already a built-in tool; give it another name")
    return default_registry(http=spec.http_allow, extra=plugin)


def build_pipeline(
    spec: PipelineSpec | None = None,
    *,
    backend: ModelBackend | None = None,
    world: World | None = None,
    tools: ToolRegistry | None = None,
    extra: Sequence[Actor] = (),
    tick_period: float = 0.2,
) -> list[Actor]:
    """The actors of one session: the standard pipeline that ``spec`` describes.

    ``backend`` overrides ``spec.model`` (an already made backend, e.g. an open sglang client); ``world``
    replaces the tool runner and background actor; ``tools`` replaces the registry built from the spec; ``extra``
    actors go last (a console, a transport). Raises :class:`PipelineError`, :class:`PluginError` or
    :class:`~microturn.assembly.BackendError`, each naming what the user typed."""
    spec = spec or PipelineSpec()
    check_dialog_timings(spec.dialog)
    if spec.outputs_per_tick < 1:
        raise PipelineError(f"outputs_per_tick = {spec.outputs_per_tick!r}: must be >= 1")
    if backend is None:
        backend = make_backend(spec.model, spec.model_options)
    timings = DialogTimings.from_seconds(tick_period, **spec.dialog) if spec.dialog else None
    if world is None:
        world = _real_world(spec, tools)
    plugins = make_plugin_actors(spec.actors)
    recognizer: list[Actor] = [RecognizerActor()] if spec.recognizer == "pocketsphinx" else []
    return [
        ClockActor(),
        PerceptionActor(),
        DialogStateActor(timings),
        InteractionActor(backend, ModelSpec(outputs_per_tick=spec.outputs_per_tick, seed=spec.seed),
                         tools=world.tool_names),
        OutputMixer(render_audio=spec.render_audio, wav_path=spec.wav_path),
        *recognizer,
        *world.actors,
        *plugins,
        *extra,
    ]


def _real_world(spec: PipelineSpec, tools: ToolRegistry | None) -> World:
    """The live loop's tool runner and background actor, sharing one registry (the planner calls the tools)."""
    if spec.tools == "none":
        if spec.tool_modules:
            raise PipelineError(f"tool_modules = {spec.tool_modules!r}: tools = 'none' runs no tool")
        if spec.background == "offline":
            raise PipelineError("background = 'offline': the offline planner needs tools = 'builtin'")
        return World([])
    registry = tools if tools is not None else tool_registry(spec)
    actors: list[Actor] = []
    if spec.background == "offline":
        actors.append(BackgroundActor(OfflinePlanner(), tools=registry, name="background"))
    actors.append(ToolRunner(registry, name="tool_runner"))
    return World(registry.names(), actors)


# --- replay: plugins are code, recordings are data --------------------------------------------------------------

_ALLOWED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("microturn_allowed_plugins",
                                                                          default=frozenset())


def plugin_key(spec: str) -> str:
    """How a plugin is compared between a recording and the command line: a file by its absolute path (with
    any ``:FACTORY`` kept), a module by its name."""
    module, sep, attr = spec.rpartition(":")
    if not (sep and attr.isidentifier()):
        module, sep, attr = spec, "", ""
    return f"{resolve_module_spec(module)}{sep}{attr}"


@contextlib.contextmanager
def allow_plugins(specs: Iterable[str]) -> Iterator[None]:
    """Within this block, :func:`build_from_params` (what replay calls) may import these plugins. Replay of a
    recording whose session loaded a plugin needs it named again on the command line (``--tools``/``--actor``)."""
    token = _ALLOWED.set(frozenset(plugin_key(s) for s in specs))
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def require_allowed(tool_modules: Iterable[str], actors: Iterable[str]) -> None:
    """Refuse to import a plugin a recording names unless the user named it too (see :func:`allow_plugins`)."""
    allowed = _ALLOWED.get()
    for flag, specs in (("--tools", tool_modules), ("--actor", actors)):
        for s in specs:
            if plugin_key(s) not in allowed:
                raise PluginError(f"{flag} {s}: this recording's session loaded that plugin, and replay runs "
                                  f"plugin code only when you name it: add {flag} {s}")


def build_from_params(**params: Any) -> list[Actor]:
    """The factory recordings of assembled sessions name: a :class:`PipelineSpec` as plain data -> its actors.
    Plugins the params name are imported only if allowed (:func:`allow_plugins`)."""
    try:
        spec = msgspec.convert(params, PipelineSpec)
    except msgspec.ValidationError as exc:
        raise PipelineError(f"the recording's pipeline description is invalid: {exc}") from None
    require_allowed(spec.tool_modules, spec.actors)
    return build_pipeline(spec)
