"""The tool API: ``@tool`` turns a typed async function into a tool; its JSON schema comes from the
annotations; arguments are validated before the call, with errors that name the parameter and the value."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import pytest

import microturn.tools
from microturn.tools import (
    Tool,
    ToolArgumentError,
    ToolContext,
    ToolDefinitionError,
    ToolRegistry,
    UnknownToolError,
    tool,
)


class Place(msgspec.Struct):
    city: str
    country: str = ""


@tool(timeout=2.5, concurrency=3)
async def forecast(
    ctx: ToolContext,
    place: Place,
    days: Annotated[int, msgspec.Meta(ge=1, le=14, description="how many days ahead")] = 3,
    units: Literal["metric", "imperial"] = "metric",
    tags: list[str] = [],  # noqa: B006 - a tool default is copied per call by msgspec
) -> dict:
    """The weather forecast for a place.

    More words that are not part of the description."""
    return {"place": place, "days": days, "units": units, "tags": tags, "call": ctx.call_id}


def test_the_schema_comes_from_the_annotations() -> None:
    assert isinstance(forecast, Tool)
    assert (forecast.name, forecast.timeout, forecast.concurrency, forecast.side_effects) == ("forecast", 2.5, 3, False)
    assert forecast.description == "The weather forecast for a place."
    assert forecast.context_param == "ctx" and [p.name for p in forecast.params] == ["place", "days", "units", "tags"]
    assert forecast.schema == {
        "type": "object",
        "properties": {
            "place": {"$ref": "#/$defs/Place"},
            "days": {
                "description": "how many days ahead", "type": "integer", "minimum": 1, "maximum": 14, "default": 3
            },
            "units": {"enum": ["imperial", "metric"], "default": "metric"},
            "tags": {"type": "array", "items": {"type": "string"}, "default": []},
        },
        "required": ["place"],
        "additionalProperties": False,
        "$defs": {
            "Place": {
                "title": "Place",
                "type": "object",
                "properties": {"city": {"type": "string"}, "country": {"type": "string", "default": ""}},
                "required": ["city"],
            }
        },
    }
    assert forecast.openai_spec() == {
        "type": "function",
        "function": {"name": "forecast", "description": forecast.description, "parameters": forecast.schema},
    }


def test_a_bare_decorator_and_an_empty_signature() -> None:
    @tool
    async def ping() -> str:
        return "pong"

    assert (ping.name, ping.description, ping.timeout) == ("ping", "", 10.0)
    assert ping.schema == {"type": "object", "properties": {}, "required": [], "additionalProperties": False}


async def test_invoke_validates_fills_defaults_and_returns_plain_data() -> None:
    ctx = ToolContext.standalone("c-1", "forecast")
    got = await forecast.invoke({"place": {"city": "Oslo"}}, ctx)
    assert got == {"place": {"city": "Oslo", "country": ""}, "days": 3, "units": "metric", "tags": [], "call": "c-1"}
    again = await forecast.invoke({"place": {"city": "Oslo"}}, ctx)
    assert again["tags"] is not got["tags"]  # a mutable default is never shared between calls
    # calling the Tool object calls the function as written (handy in unit tests)
    direct = await forecast(ctx, Place("Bergen"), days=1)
    assert direct["place"] == Place("Bergen") and direct["days"] == 1


@pytest.mark.parametrize(
    ("args", "param", "value", "message"),
    [
        ({"place": {"city": "Oslo"}, "days": "3"}, "days", "3",
         "argument 'days' = '3' is invalid: expected `int`, got `str`"),
        ({"place": {"city": "Oslo"}, "days": 30}, "days", 30,
         "argument 'days' = 30 is invalid: expected `int` <= 14"),
        ({"place": {"city": "Oslo"}, "units": "kelvin"}, "units", "kelvin",
         "argument 'units' = 'kelvin' is invalid: invalid enum value 'kelvin'"),
        ({"place": {"city": "Oslo"}, "tags": ["a", 2]}, "tags", 2,
         "argument 'tags' at tags[1] = 2 is invalid: expected `str`, got `int`"),
        ({"place": {"country": "NO"}}, "place", {"country": "NO"},
         "argument 'place' = {'country': 'NO'} is invalid: object missing required field `city`"),
        ({}, "place", None, "missing required argument 'place'"),
        ({"place": {"city": "Oslo"}, "ctx": 1}, "ctx", 1,
         "unexpected argument 'ctx' = 1 (parameters: place, days, units, tags)"),
        (["Oslo"], None, ["Oslo"], "arguments must be an object of named parameters, got list ['Oslo']"),
    ],
)
def test_bad_arguments_name_the_parameter_and_the_value(args, param, value, message) -> None:
    with pytest.raises(ToolArgumentError) as caught:
        forecast.validate(args)
    error = caught.value
    assert (error.tool, error.param, error.value) == ("forecast", param, value)
    assert str(error) == f"tool 'forecast': {message}"


async def test_a_bad_argument_means_the_tool_never_runs() -> None:
    ran = []

    @tool
    async def record(n: int) -> int:
        ran.append(n)
        return n

    with pytest.raises(ToolArgumentError, match="argument 'n' = 1.5 is invalid"):
        await record.invoke({"n": 1.5}, ToolContext.standalone())
    assert ran == []


def test_what_cannot_be_a_tool_is_refused_with_the_reason() -> None:
    def sync(x: int) -> int:
        return x

    async def untyped(x):
        return x

    async def star(*args: int) -> None: ...

    async def positional(x: int, /) -> None: ...

    async def unknown_type(x: object.__class__) -> None: ...

    cases = [
        (sync, "needs an async function"),
        (untyped, "parameter 'x' needs a type annotation"),
        (star, "parameter 'args' is \\*args/\\*\\*kwargs"),
        (positional, "parameter 'x' is positional-only"),
    ]
    for fn, message in cases:
        with pytest.raises(ToolDefinitionError, match=message):
            tool(fn)
    with pytest.raises(ToolDefinitionError, match="timeout must be > 0"):
        tool(timeout=0)(untyped)
    with pytest.raises(ToolDefinitionError, match="concurrency must be an int >= 1"):
        tool(concurrency=0)(forecast.fn)
    with pytest.raises(ToolDefinitionError, match="tool name must be"):
        tool(name="a b")(forecast.fn)
    with pytest.raises(ToolDefinitionError, match="a parameter type cannot be validated"):
        tool(unknown_type)


async def test_a_result_that_cannot_be_sent_fails_clearly() -> None:
    @tool
    async def opaque() -> object:
        return object()

    with pytest.raises(microturn.tools.ToolError, match="returned a value that cannot be sent"):
        await opaque.invoke({}, ToolContext.standalone())


def test_the_registry_is_the_only_way_to_a_tool() -> None:
    async def plain(x: int) -> int:
        return x

    registry = ToolRegistry([forecast, plain])
    assert registry.names() == ["forecast", "plain"] and "plain" in registry and len(registry) == 2
    assert isinstance(registry.get("plain"), Tool)
    with pytest.raises(UnknownToolError) as caught:
        registry.get("delete_everything")
    assert str(caught.value) == "unknown tool 'delete_everything'; registered: forecast, plain"
    with pytest.raises(ToolDefinitionError, match="a tool named 'plain' is already registered"):
        registry.register(plain)
    sub = registry.subset(["plain", "not-there"])
    assert sub.names() == ["plain"] and sub.slots("plain") is registry.slots("plain")
    assert [s["function"]["name"] for s in registry.specs()] == ["forecast", "plain"]


def test_the_tools_package_sits_below_the_runtime() -> None:
    """docs/design.md §2: tools may import messages and log, never runtime or actors."""
    package = Path(microturn.tools.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert not name.startswith(("microturn.runtime", "microturn.actors")), f"{path.name} imports {name}"


def test_every_public_name_has_a_docstring() -> None:
    for name in microturn.tools.__all__:
        obj = getattr(microturn.tools, name)
        if inspect.isclass(obj) or inspect.isfunction(obj) or isinstance(obj, Tool):
            doc = obj.description if isinstance(obj, Tool) else obj.__doc__
            assert doc and doc.strip(), name
