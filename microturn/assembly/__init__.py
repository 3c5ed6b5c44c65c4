"""The one place that builds sessions: the typed backend registry, plugin loading (tool modules, actor
factories) and the standard pipeline. ``run``, ``demo``, ``chat``, ``corpus`` and ``serve`` build here, so a
model name, a ``--tools`` module or an ``--actor`` means the same thing in each."""

from ._backends import BACKENDS, BackendEntry, BackendError, BackendFactory, BackendRegistry, make_backend
from ._pipeline import (
    DIALOG_TIMINGS,
    FACTORY,
    PipelineError,
    PipelineSpec,
    World,
    allow_plugins,
    build_from_params,
    build_pipeline,
    check_dialog_timings,
    dialog_timing_problem,
    plugin_key,
    require_allowed,
    tool_registry,
)
from ._plugins import (
    PluginError,
    is_file_spec,
    load_actor_factory,
    load_tool_module,
    load_tools,
    make_plugin_actors,
    resolve_module_spec,
)

__all__ = [
    "BACKENDS",
    "BackendEntry",
    "BackendError",
    "BackendFactory",
    "BackendRegistry",
    "make_backend",
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
    "PluginError",
    "load_actor_factory",
    "load_tool_module",
    "load_tools",
    "make_plugin_actors",
    "is_file_spec",
    "resolve_module_spec",
]
