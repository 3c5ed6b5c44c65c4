"""Tools: declare them with ``@tool``, collect them in a :class:`ToolRegistry`, run them with the tool runner
actor (``microturn.actors.ToolRunner``).

::

    from microturn.tools import tool

    @tool
    async def convert(celsius: float) -> float:
        \"\"\"Celsius to Fahrenheit.\"\"\"
        return celsius * 9 / 5 + 32

The JSON schema comes from the annotations (msgspec), arguments are validated before the call, and a bad
argument fails the call with a message naming the parameter and the value. This package sits below the
runtime: it imports neither ``microturn.runtime`` nor ``microturn.actors`` (docs/design.md §2).
"""

from .arith import calculate_expression, format_number
from .builtins import (
    BUILTIN_TOOL_NAMES,
    builtin_tools,
    calculate,
    cancel_timer,
    default_registry,
    elapsed_time,
    say_duration,
    session_time,
    set_timer,
)
from .errors import (
    CalculationError,
    ToolArgumentError,
    ToolDefinitionError,
    ToolError,
    ToolRefused,
    UnknownToolError,
)
from .http import HTTP_ALLOW_ENV, HttpPolicy, make_http_get
from .knowledge import Fact, KnowledgeBase, make_search_knowledge
from .registry import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, Tool, ToolContext, ToolRegistry, tool

__all__ = [
    "tool",
    "Tool",
    "ToolContext",
    "ToolRegistry",
    "DEFAULT_TIMEOUT",
    "DEFAULT_CONCURRENCY",
    "ToolError",
    "ToolDefinitionError",
    "ToolArgumentError",
    "UnknownToolError",
    "ToolRefused",
    "CalculationError",
    "session_time",
    "elapsed_time",
    "set_timer",
    "cancel_timer",
    "calculate",
    "calculate_expression",
    "format_number",
    "say_duration",
    "HttpPolicy",
    "HTTP_ALLOW_ENV",
    "make_http_get",
    "Fact",
    "KnowledgeBase",
    "make_search_knowledge",
    "BUILTIN_TOOL_NAMES",
    "builtin_tools",
    "default_registry",
]
