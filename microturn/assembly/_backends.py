"""The typed registry of interaction backends: a model name (``embedded``, ``scripted``, ``local:PATH``,
``sglang:URL``, ``sglang-text:URL``, or one a plugin registered) -> a :class:`~microturn.model.protocol.ModelBackend`.

Every entry point (``run``, ``demo``, ``chat``, ``corpus``, the scenario runner) makes its backend here, so a
name means the same thing everywhere and an error names what the user typed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from microturn.model.protocol import ModelBackend
from microturn.runtime import MicroturnError

__all__ = ["BACKENDS", "BackendEntry", "BackendError", "BackendFactory", "BackendRegistry", "make_backend"]

BackendFactory = Callable[[dict[str, Any]], ModelBackend]
"""Makes a backend from its options (the part after ``NAME:`` is already in them, under the entry's argument)."""


class BackendError(MicroturnError):
    """A model name that is unknown, or a backend that refuses its options; ``key`` is what the user typed it
    as (``--model``, ``model.name``), ``value`` what they typed."""

    def __init__(self, reason: str, *, key: str = "--model", value: Any = None) -> None:
        self.reason, self.key, self.value = reason, key, value
        super().__init__(f"{key} {value}: {reason}" if value is not None else f"{key}: {reason}")


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend: its factory, which option ``NAME:ARG`` sets, and a line for help texts."""

    name: str
    factory: BackendFactory
    argument: str | None = None
    description: str = ""


class BackendRegistry:
    """Interaction backends by name. Open: a plugin may :meth:`register` its own."""

    def __init__(self) -> None:
        self._entries: dict[str, BackendEntry] = {}

    def register(self, name: str, factory: BackendFactory, *, argument: str | None = None,
                 description: str = "") -> None:
        """Add (or replace) the backend called ``name``; ``argument`` is the option ``name:ARG`` sets."""
        if not name or ":" in name:
            raise ValueError(f"a backend name must be non-empty and have no ':', got {name!r}")
        self._entries[name] = BackendEntry(name, factory, argument, description)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, spec: object) -> bool:
        return isinstance(spec, str) and spec.partition(":")[0] in self._entries

    def entry(self, spec: str, *, key: str = "--model") -> BackendEntry:
        """The entry a model spec (``NAME`` or ``NAME:ARG``) names; :class:`BackendError` if none."""
        name = spec.partition(":")[0]
        found = self._entries.get(name)
        if found is None:
            raise BackendError(f"unknown model; known: {', '.join(self.names())}", key=key, value=spec)
        return found

    def split(self, spec: str, *, key: str = "--model") -> tuple[BackendEntry, dict[str, Any]]:
        """``"local:PATH"`` -> (the local entry, ``{"checkpoint": "PATH"}``); a plain name has no options."""
        entry = self.entry(spec, key=key)
        _, sep, argument = spec.partition(":")
        if not sep:
            return entry, {}
        if entry.argument is None:
            raise BackendError(f"the {entry.name} model takes no ':' argument", key=key, value=spec)
        if not argument:
            raise BackendError(f"nothing after '{entry.name}:' (expected the {entry.argument})", key=key, value=spec)
        return entry, {entry.argument: argument}

    def make(self, spec: str, options: Mapping[str, Any] | None = None, *, key: str = "--model") -> ModelBackend:
        """The backend ``spec`` names, made with ``options``. Every refusal is a :class:`BackendError` that
        names ``key`` and ``spec`` as the user typed them."""
        entry, extra = self.split(spec, key=key)
        try:
            return entry.factory({**(options or {}), **extra})
        except BackendError:
            raise
        except TypeError as exc:  # an option the backend's constructor does not take
            raise BackendError(f"the {entry.name} model refuses the options {dict(options or {})}: {exc}", key=key,
                               value=spec) from None
        except (ValueError, RuntimeError, OSError) as exc:  # RuntimeError: a checkpoint that won't load
            raise BackendError(str(exc), key=key, value=spec) from None


def _scripted(options: dict[str, Any]) -> ModelBackend:
    from microturn.model.scripted import ScriptedPolicy

    return ScriptedPolicy(**options)


def _local(options: dict[str, Any]) -> ModelBackend:
    checkpoint = options.pop("checkpoint", None)
    if not checkpoint:
        raise ValueError("the local model needs a checkpoint: local:PATH, or [model] options.checkpoint")
    weights = Path(checkpoint).with_suffix(".pt")
    if not weights.is_file():
        raise ValueError(f"no checkpoint at {checkpoint}" + (f" (nor {weights})" if str(weights) != str(checkpoint)
                                                             else ""))
    try:
        from microturn.model.local import LocalBackend
    except ImportError as exc:
        raise ValueError(f"the trained model needs torch: pip install 'microturn[torch]' (or use --model "
                         f"scripted) [{exc}]") from None
    return LocalBackend(checkpoint, **options)


def _embedded(options: dict[str, Any]) -> ModelBackend:
    from microturn.model.weights import EMBEDDED_CHECKPOINT

    if not EMBEDDED_CHECKPOINT.is_file():
        raise ValueError(f"the shipped checkpoint {EMBEDDED_CHECKPOINT} is missing (a damaged install?); "
                         "use --model scripted, or local:PATH for another checkpoint")
    return _local({**options, "checkpoint": EMBEDDED_CHECKPOINT})


def _sglang(mode: Literal["native", "text"]) -> BackendFactory:
    def make(options: dict[str, Any]) -> ModelBackend:
        url = options.pop("url", None)
        if not url:
            raise ValueError("needs a server URL: sglang:URL (or --url URL), or [model] options.url")
        from microturn.model.sglang import SglangBackend

        return SglangBackend(url, mode=mode, **options)

    return make


BACKENDS = BackendRegistry()
"""The process's backend registry (what ``--model`` and a scenario's ``[model] name`` look up)."""
BACKENDS.register("embedded", _embedded, description="the shipped trained checkpoint (default; needs torch)")
BACKENDS.register("scripted", _scripted, description="the rule policy the embedded model imitates")
BACKENDS.register("local", _local, argument="checkpoint", description="local:CHECKPOINT, another trained model")
BACKENDS.register("sglang", _sglang("native"), argument="url",
                  description="sglang:URL, a model server (sglang or microturn serve), native token layout")
BACKENDS.register("sglang-text", _sglang("text"), argument="url",
                  description="sglang-text:URL, any instruct model through the text bridge")


def make_backend(spec: str, options: Mapping[str, Any] | None = None, *, key: str = "--model") -> ModelBackend:
    """The backend ``spec`` names in :data:`BACKENDS` (see :meth:`BackendRegistry.make`)."""
    return BACKENDS.make(spec, options, key=key)
