"""Safe arithmetic: a parser and a whitelist evaluator, never ``eval``.

The expression is parsed by Python's own parser (``ast.parse(..., mode="eval")``: a real grammar, no code is
run) and the tree is walked here, accepting only numbers, ``+ - * / // % **`` (``^`` is read as a power, as
people write it, with a power's precedence), unary signs, parentheses, the constants ``pi``, ``e`` and
``tau`` and a few functions (``sqrt abs round min max floor ceil exp log log10 sin cos tan``). Anything
else — a name, an attribute, a string, a call of anything not listed — is refused with a message naming it.
Input length, exponents and result size are bounded, so no expression can hang the loop or eat memory. (No
dependency: the stdlib parser is the grammar; a whitelist walk is a dozen lines.)
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from .errors import CalculationError

__all__ = ["calculate_expression", "format_number", "MAX_LENGTH"]

MAX_LENGTH = 200
"""The longest expression accepted, in characters."""
_MAX_MAGNITUDE = 1e300  # beyond float range (and beyond anything spoken) an answer is useless
_MAX_EXPONENT = 1000

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": lambda x, digits=0: _round(x, digits),
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "log": math.log,
    "ln": math.log,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
# "2^10" means a power to anyone but a programmer; it becomes "**" before parsing so it binds like a power.
_SYMBOLS = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-", "^": "**"})


def calculate_expression(expression: str) -> int | float:
    """Evaluate an arithmetic expression safely; raises :class:`CalculationError` naming what is wrong."""
    if not isinstance(expression, str):
        raise CalculationError(f"expression must be text, got {type(expression).__name__}")
    text = expression.translate(_SYMBOLS).strip()
    if not text:
        raise CalculationError("expression is empty")
    if len(text) > MAX_LENGTH:
        raise CalculationError(f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculationError(f"cannot parse {expression!r}: {exc.msg} at column {exc.offset}") from None
    except (RecursionError, MemoryError, ValueError):
        raise CalculationError(f"cannot parse {expression!r}: too deeply nested") from None
    try:
        value = _eval(tree.body)
    except CalculationError:
        raise
    except ZeroDivisionError:
        raise CalculationError(f"{expression!r} divides by zero") from None
    except OverflowError:
        raise CalculationError(f"{expression!r} is too large to compute") from None
    except RecursionError:
        raise CalculationError(f"{expression!r} is too deeply nested") from None
    except (ValueError, TypeError) as exc:  # e.g. sqrt(-1), log(0), round() of nothing
        raise CalculationError(f"{expression!r} has no value: {exc}") from None
    return _tidy(value)


def format_number(value: int | float) -> str:
    """A number as it is said: integers plainly, others to at most 6 significant digits."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _tidy(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CalculationError(f"the result is not a number: {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculationError("the result is not a finite number")
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


def _check(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > _MAX_MAGNITUDE:
        raise CalculationError(f"an intermediate result exceeds {_MAX_MAGNITUDE:g}")
    return value


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalculationError(f"only numbers are allowed, got {node.value!r}")
        return _check(node.value)
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise CalculationError(f"operator {type(node.op).__name__} is not allowed")
        left, right = _eval(node.left), _eval(node.right)
        if op is operator.pow:
            _check_power(left, right)
        return _check(op(left, right))
    if isinstance(node, ast.UnaryOp):
        op1 = _UNARY.get(type(node.op))
        if op1 is None:
            raise CalculationError(f"operator {type(node.op).__name__} is not allowed")
        return op1(_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise CalculationError(f"unknown name {node.id!r} (constants: {', '.join(_CONSTANTS)})")
    if isinstance(node, ast.Call):
        fn = _FUNCTIONS.get(node.func.id) if isinstance(node.func, ast.Name) else None
        if fn is None or node.keywords:
            shown = ast.unparse(node.func)
            raise CalculationError(f"function {shown!r} is not allowed (functions: {', '.join(_FUNCTIONS)})")
        if len(node.args) > 16:
            raise CalculationError("too many arguments")
        return _check(fn(*[_eval(a) for a in node.args]))
    raise CalculationError(f"{type(node).__name__} is not arithmetic ({ast.unparse(node)!r})")


def _round(x: Any, digits: Any = 0) -> Any:
    if not isinstance(digits, int) or abs(digits) > 100:  # round(1, -10**299) would build 10**(10**299)
        raise CalculationError(f"round() digits must be a whole number within -100..100, got {digits!r}")
    return round(x, digits)


def _check_power(base: Any, exponent: Any) -> None:
    if abs(exponent) > _MAX_EXPONENT:
        raise CalculationError(f"exponent {exponent!r} is larger than {_MAX_EXPONENT}")
    if base and abs(base) > 1 and exponent > 0 and exponent * math.log10(abs(base)) > 300:
        raise CalculationError(f"{base!r} ** {exponent!r} is too large to compute")
