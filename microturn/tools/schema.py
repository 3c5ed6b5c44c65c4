"""Tool parameters as a msgspec Struct: the JSON schema comes from it, and arguments are validated by it.

A tool's signature ``(city: str, days: int = 1)`` becomes a Struct with those fields (``forbid_unknown_fields``,
so an argument the tool does not take is an error too). ``msgspec.json.schema_components`` turns the Struct
into a JSON-schema object; ``msgspec.convert`` validates a call's arguments against it (strictly: ``"3"`` is
not an ``int``), and :func:`explain` maps msgspec's error path (``$.days``) to a message that names the
parameter and the value. Constraints and descriptions ride on the annotations:
``Annotated[int, msgspec.Meta(ge=1, le=14, description="how many days")]``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from .errors import ToolArgumentError, ToolDefinitionError, short_repr

__all__ = ["Param", "build_args_type", "json_schema", "convert_args", "explain"]

_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_UNKNOWN = re.compile(r"contains unknown field `([^`]+)`")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z_0-9]*)|\[(\d+)\]")


class Param(msgspec.Struct, frozen=True):
    """One parameter of a tool: its name, annotation and default (``inspect.Parameter.empty`` when required)."""

    name: str
    annotation: Any
    default: Any = inspect.Parameter.empty


def build_args_type(tool: str, params: list[Param]) -> type[msgspec.Struct]:
    """The Struct that holds a call's arguments. Raises :class:`ToolDefinitionError` for an annotation msgspec
    cannot validate (it names the parameter)."""
    fields: list[tuple[Any, ...]] = []
    for p in params:
        if p.default is inspect.Parameter.empty:
            fields.append((p.name, p.annotation))
        elif isinstance(p.default, (list, dict, set)) and p.default:  # msgspec copies empty ones itself
            default = p.default
            fields.append((p.name, p.annotation, msgspec.field(default_factory=lambda d=default: type(d)(d))))
        else:
            fields.append((p.name, p.annotation, p.default))
    try:
        struct = msgspec.defstruct(tool, fields, kw_only=True, forbid_unknown_fields=True, frozen=True)
        msgspec.json.schema(struct)  # fails early for types that have no JSON form
    except (TypeError, ValueError) as exc:
        raise ToolDefinitionError(f"tool {tool!r}: a parameter type cannot be validated: {exc}") from None
    return struct


def json_schema(args_type: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON-schema object of a tool's parameters (nested types go under ``$defs``)."""
    (ref,), components = msgspec.json.schema_components((args_type,), ref_template="#/$defs/{name}")
    name = ref["$ref"].rsplit("/", 1)[1]
    schema = dict(components.pop(name))
    schema.pop("title", None)
    schema.setdefault("properties", {})
    schema.setdefault("required", [])
    if components:
        schema["$defs"] = components
    return schema


def convert_args(tool: str, args_type: type[msgspec.Struct], args: Any) -> dict[str, Any]:
    """Validate ``args`` (a mapping of parameter name to value) and return them as keyword arguments."""
    if not isinstance(args, Mapping):
        raise ToolArgumentError(
            tool, None, args, f"arguments must be an object of named parameters, got {type(args).__name__} "
            f"{short_repr(args)}"
        )
    try:
        value = msgspec.convert(dict(args), type=args_type, strict=True)
    except msgspec.ValidationError as exc:
        raise explain(tool, args_type, args, exc) from None
    return {name: getattr(value, name) for name in args_type.__struct_fields__}


def explain(tool: str, args_type: type[msgspec.Struct], args: Mapping[str, Any], exc: Exception) -> ToolArgumentError:
    """Turn msgspec's validation error into one that names the parameter and the offending value."""
    text = str(exc)
    names = ", ".join(args_type.__struct_fields__) or "(none)"
    missing = _MISSING.search(text)
    if missing is not None and _PATH.search(text) is None:
        param = missing.group(1)
        return ToolArgumentError(tool, param, None, f"missing required argument {param!r}")
    unknown = _UNKNOWN.search(text)
    if unknown is not None and _PATH.search(text) is None:
        param = unknown.group(1)
        value = args.get(param)
        return ToolArgumentError(
            tool, param, value, f"unexpected argument {param!r} = {short_repr(value)} (parameters: {names})"
        )
    match = _PATH.search(text)
    if match is None:
        return ToolArgumentError(tool, None, args, f"invalid arguments: {text}")
    path = match.group("path")
    reason = text[: match.start()]
    steps = list(_STEP.finditer(path))
    param = steps[0].group(1) if steps and steps[0].group(1) else None
    value: Any = args
    for step in steps:  # walk to the offending value (a list item or a nested field, not just the parameter)
        key, index = step.group(1), step.group(2)
        try:
            value = value[key] if key is not None else value[int(index)]
        except (KeyError, IndexError, TypeError):
            break
    where = f"argument {param!r}" if param else "arguments"
    inner = f" at {path.lstrip('.')}" if len(steps) > 1 else ""
    reason = reason[:1].lower() + reason[1:]
    return ToolArgumentError(tool, param, value, f"{where}{inner} = {short_repr(value)} is invalid: {reason}")
