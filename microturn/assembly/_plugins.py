"""Plugins: tool modules (``--tools MODULE_OR_FILE``) and extra actors (``--actor MODULE:FACTORY``).

A tool module is a Python module (a dotted name on the path, or a ``.py`` file) that defines ``@tool``
functions; every :class:`~microturn.tools.Tool` it defines at top level is registered. An actor factory is a
callable that returns an :class:`~microturn.runtime.Actor` (or a list of them). Importing a plugin runs its
code: only what a user names on the command line or in their own scenario file is ever imported, never what a
recording names (replay needs the same flags again).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from microturn.runtime import Actor, MicroturnError
from microturn.tools import Tool

__all__ = [
    "PluginError",
    "is_file_spec",
    "load_actor_factory",
    "load_tool_module",
    "load_tools",
    "make_plugin_actors",
    "resolve_module_spec",
]


class PluginError(MicroturnError):
    """A tool module or actor factory that cannot be loaded; the message names the flag and the value."""


def is_file_spec(spec: str) -> bool:
    """Whether a plugin spec names a ``.py`` file (by its ending or a path separator) rather than a dotted module."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def resolve_module_spec(spec: str, base: str | Path = ".") -> str:
    """A file spec made absolute (relative ones against ``base``); a dotted module name as it is."""
    return str((Path(base) / Path(spec).expanduser()).resolve()) if is_file_spec(spec) else spec


def _import(spec: str, flag: str) -> ModuleType:
    """Import a dotted module name, or a ``.py`` file by path (under a name derived from its absolute path, so
    two files called ``tools.py`` do not collide and a second load reuses the first)."""
    if is_file_spec(spec):
        path = Path(resolve_module_spec(spec))
        if not path.is_file():
            raise PluginError(f"{flag} {spec}: no such file ({path})")
        name = f"microturn_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        if name in sys.modules:
            return sys.modules[name]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise PluginError(f"{flag} {spec}: not a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise PluginError(f"{flag} {spec}: importing it failed: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise PluginError(f"{flag} {spec}: no such module ({exc.name} not found); give a module on the Python "
                          "path or a path to a .py file") from None
    except Exception as exc:
        raise PluginError(f"{flag} {spec}: importing it failed: {type(exc).__name__}: {exc}") from exc


def load_tool_module(spec: str, *, flag: str = "--tools") -> list[Tool]:
    """Every ``@tool`` defined at the top level of module or file ``spec``, in definition order. A module
    without any is an error (it was surely meant to have some)."""
    module = _import(spec, flag)
    found = [value for value in vars(module).values() if isinstance(value, Tool)]
    if not found:
        raise PluginError(f"{flag} {spec}: defines no @tool function")
    return found


def load_tools(specs: Iterable[str], *, flag: str = "--tools") -> list[Tool]:
    """The tools of several modules, in order; a tool name defined twice is an error naming both modules."""
    tools: list[Tool] = []
    where: dict[str, str] = {}
    for spec in specs:
        for t in load_tool_module(spec, flag=flag):
            if t.name in where and where[t.name] != spec:
                raise PluginError(f"{flag} {spec}: tool {t.name!r} is also defined by {where[t.name]}")
            if t.name not in where:
                where[t.name] = spec
                tools.append(t)
    return tools


def load_actor_factory(spec: str, *, flag: str = "--actor") -> Callable[..., Any]:
    """The callable ``MODULE:FACTORY`` (or ``path/to/file.py:FACTORY``) names."""
    module_spec, sep, attr = spec.rpartition(":")
    if not sep or not module_spec or not attr:
        raise PluginError(f"{flag} {spec}: expected MODULE:FACTORY (a function that returns an actor)")
    module = _import(module_spec, flag)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise PluginError(f"{flag} {spec}: {module_spec} has no callable {attr!r}")
    return factory


def make_plugin_actors(specs: Iterable[str], *, flag: str = "--actor") -> list[Actor]:
    """Call each factory and collect the actors it returns (one, or a list)."""
    actors: list[Actor] = []
    for spec in specs:
        made = load_actor_factory(spec, flag=flag)()
        items = made if isinstance(made, (list, tuple)) else [made]
        for item in items:
            if not isinstance(item, Actor):
                raise PluginError(f"{flag} {spec}: returned {type(item).__name__}, not an Actor")
            actors.append(item)
    return actors
