"""Optional extras: one place that says which ``pip install 'microturn[EXTRA]'`` a command is missing.

A command checks what it needs before it imports it (``require("starlette", "serve", "microturn serve")``), so
a missing optional package becomes :class:`MissingExtra`, which the command line prints as one line
(``error: microturn serve needs the 'serve' extra: pip install 'microturn[serve]'``) with exit status 2,
never as a traceback from deep inside an import.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType

from microturn.runtime._errors import MicroturnError

__all__ = ["EXTRAS", "MissingExtra", "check", "install_command", "require"]

EXTRAS: dict[str, str] = {
    "torch": "the trained interaction model and the kernels (torch, triton)",
    "serve": "`microturn serve` (hypercorn, starlette)",
    "images": "decoding PNG/JPEG images in perception (Pillow)",
    "vad": "the learned voice-activity detector (silero-vad)",
    "realtime": "the OpenAI Realtime protocol, `microturn serve --realtime` (openai, websockets)",
    "asr": "the speech recognizer (pocketsphinx)",
    "sglang": "sglang itself, for `microturn sglang-up` (an NVIDIA GPU)",
}
"""The optional extras of pyproject.toml that a user may be told to install, and what each brings."""


def install_command(*extras: str) -> str:
    """``pip install 'microturn[a,b]'`` for these extras."""
    return f"pip install 'microturn[{','.join(extras)}]'"


class MissingExtra(MicroturnError, ImportError):
    """An optional package is not installed; the message names the command, the extras and the pip command."""

    def __init__(self, what: str, extras: list[str], *, hint: str = "", detail: str = "") -> None:
        self.what = what
        self.extras = extras
        names = " and ".join(f"'{e}'" for e in extras)
        message = f"{what} needs the {names} extra{'s' if len(extras) > 1 else ''}: {install_command(*extras)}"
        if hint:
            message += f" ({hint})"
        if detail:
            message += f"; {detail}"
        super().__init__(message)


def _missing(module: str) -> str | None:
    """None when ``module`` imports; else why not ("" when it is simply not installed)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # a module that is absent is the usual case; an installed one that fails to import says why
        if exc.name is not None and module.split(".")[0] == exc.name.split(".")[0]:
            return ""
        return f"importing {module} failed: {exc}"
    except ImportError as exc:
        return f"importing {module} failed: {exc}"
    return None


def check(what: str, needs: Mapping[str, str], *, hint: str = "") -> None:
    """Raise :class:`MissingExtra` naming every extra of ``needs`` (module -> extra) whose module is missing."""
    unknown = [extra for extra in needs.values() if extra not in EXTRAS]
    if unknown:
        raise ValueError(f"check(needs=...): unknown extra(s) {unknown}; known: {sorted(EXTRAS)}")
    extras: list[str] = []
    details: list[str] = []
    for module, extra in needs.items():
        why = _missing(module)
        if why is None:
            continue
        if extra not in extras:
            extras.append(extra)
        if why:
            details.append(why)
    if extras:
        raise MissingExtra(what, extras, hint=hint, detail="; ".join(details))


def require(module: str, extra: str, what: str, *, hint: str = "") -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` saying that ``what`` needs ``extra``."""
    check(what, {module: extra}, hint=hint)
    return importlib.import_module(module)
