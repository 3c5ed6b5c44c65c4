"""The exceptions of the tools package. Each message names the tool, the field and the value involved."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ToolError",
    "ToolDefinitionError",
    "ToolArgumentError",
    "UnknownToolError",
    "ToolRefused",
    "CalculationError",
    "short_repr",
]


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters, for error messages that quote a value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ToolError(Exception):
    """Base of every tool error. A tool may raise it (or a subclass) to fail with exactly this message."""


class ToolDefinitionError(ToolError, TypeError):
    """A function cannot become a tool (not async, an unannotated parameter, ``*args``, a duplicate name...)."""


class ToolArgumentError(ToolError, ValueError):
    """A call's arguments do not match the tool's parameters; the tool never ran.

    ``param`` is the parameter at fault (None when the arguments are not an object at all), ``value`` the
    offending value (None for a missing argument)."""

    def __init__(self, tool: str, param: str | None, value: Any, reason: str) -> None:
        self.tool = tool
        self.param = param
        self.value = value
        self.reason = reason
        super().__init__(f"tool {tool!r}: {reason}")


class UnknownToolError(ToolError, LookupError):
    """No tool of that name is registered."""

    def __init__(self, name: str, registered: list[str]) -> None:
        self.name = name
        self.registered = registered
        known = ", ".join(registered) if registered else "(none)"
        super().__init__(f"unknown tool {name!r}; registered: {known}")

    def __str__(self) -> str:  # LookupError would quote the whole message
        return self.args[0]


class ToolRefused(ToolError, PermissionError):
    """A tool refused a request on policy grounds (a host not on the allow-list, a response over the size cap)."""


class CalculationError(ToolError, ValueError):
    """An arithmetic expression that cannot be parsed or evaluated safely."""
