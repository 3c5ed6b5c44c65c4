"""The offline planner: the background reasoner's default backend when no endpoint is configured.

Not a language model: a small, deterministic rule table that splits a request into clauses, maps each to a
tool call from the registry (arithmetic -> ``calculate``, time questions -> ``session_time``, timers and
reminders -> ``set_timer``, a clause naming a plugin tool -> that tool, anything else -> ``search_knowledge``
over the local knowledge file) and phrases the results. When no rule gives an answer it fails ("I could not find that").
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any

import msgspec

from microturn.messages import Delegate, ToolResult
from microturn.tools import BUILTIN_TOOL_NAMES, Tool, format_number, say_duration

from .reasoner_api import ReasonerError, TaskIO

__all__ = ["OfflinePlanner", "PlanStep"]


class PlanStep(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call the planner will make for one clause of a request."""

    clause: str
    tool: str
    args: dict[str, Any]
    progress: str


_CLAUSE_SPLIT = re.compile(r"[?!;]+|\.(?=\s|$)|,?\s+and\s+(?=(?:what|who|where|when|which|how|also)\b)", re.IGNORECASE)
_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40, "forty-five": 45, "sixty": 60,
}  # fmt: skip
_UNITS = {"second": 1, "sec": 1, "minute": 60, "min": 60, "hour": 3600, "hr": 3600}
_DURATION = re.compile(
    r"\b(\d+(?:\.\d+)?|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")\s*"
    r"(seconds?|secs?|minutes?|mins?|hours?|hrs?)\b",
    re.IGNORECASE,
)
_TIMER = re.compile(r"\b(timer|remind|reminder|alarm|alert me|tell me in)\b", re.IGNORECASE)
_REMIND_WHAT = re.compile(r"\bremind me\b(?:.*?\b(?:to|that|about)\b)\s+(?P<what>.+)$", re.IGNORECASE)
_TIME = re.compile(r"\b(what time|the time|time is it|how long|elapsed|been talking|so far)\b", re.IGNORECASE)
_WORD_OPS = [
    (re.compile(r"(\d+(?:\.\d+)?)\s*(?:percent|%)\s+of\s+", re.IGNORECASE), r"\1/100*"),
    (re.compile(r"\bto the power of\b", re.IGNORECASE), "^"),
    (re.compile(r"\bmultiplied by\b|\btimes\b", re.IGNORECASE), "*"),
    (re.compile(r"\bdivided by\b", re.IGNORECASE), "/"),
    (re.compile(r"\bplus\b", re.IGNORECASE), "+"),
    (re.compile(r"\bminus\b", re.IGNORECASE), "-"),
    (re.compile(r"\s*\bsquared\b", re.IGNORECASE), "^2"),
    (re.compile(r"\s*\bcubed\b", re.IGNORECASE), "^3"),
    (re.compile(r"(?<=\d)\s*[x×]\s*(?=\d)"), "*"),
]
_EXPRESSION = re.compile(r"[-+*/^%().\d\s]+")
_HAS_OPERATION = re.compile(r"[\d)]\s*(?:\*\*|[-+*/^%])\s*[-(\d.]")
_SPOKEN_OPS = [("**", " to the power of "), ("^", " to the power of "), ("*", " times "), ("/", " divided by "),
               ("+", " plus "), ("-", " minus ")]  # fmt: skip


def _arithmetic(clause: str) -> str | None:
    """The arithmetic expression in a clause (word operators turned into symbols), if there is one."""
    text = clause
    for pattern, replacement in _WORD_OPS:
        text = pattern.sub(replacement, text)
    best = None
    for match in _EXPRESSION.finditer(text):
        candidate = match.group(0).strip().rstrip(".")
        if _HAS_OPERATION.search(candidate) and (best is None or len(candidate) > len(best)):
            best = candidate
    return best


def _spoken(expression: str) -> str:
    text = expression.replace(" ", "")
    for symbol, words in _SPOKEN_OPS:
        text = text.replace(symbol, words)
    return re.sub(r"\s+", " ", text).strip()


def _duration(clause: str) -> float | None:
    total = 0.0
    found = False
    for number, unit in _DURATION.findall(clause):
        value = float(number) if number[0].isdigit() else float(_NUMBER_WORDS[number.lower()])
        total += value * _UNITS[unit.lower().rstrip("s")]
        found = True
    return total if found and total > 0 else None


_PLACE = re.compile(r"\b(?:in|for|at|of|about|near|on)\s+(?P<what>[^,;]+?)\s*$", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _plugin_step(clause: str, t: Tool) -> PlanStep | None:
    """A call of plugin tool ``t`` when ``clause`` names it (a word of its name, ``get_weather`` -> "weather"),
    and its required arguments can be filled from the clause: a number parameter takes the clause's first
    number, a text parameter the phrase after its last preposition ("the weather in Paris" -> "Paris"), or
    the whole clause. A rule table, not understanding: a real reasoner replaces it."""
    words = set(re.findall(r"[a-z0-9]+", clause.lower()))
    name_words = {w for w in re.split(r"[_-]", t.name.lower()) if len(w) > 2 and w not in {"get", "set", "the"}}
    if not name_words & words:
        return None
    props: dict[str, Any] = t.schema.get("properties", {})
    args: dict[str, Any] = {}
    for param in t.schema.get("required", []):
        kind = props.get(param, {}).get("type")
        if kind in ("integer", "number"):
            found = _NUMBER.search(clause)
            if found is None:
                return None
            args[param] = int(float(found.group())) if kind == "integer" else float(found.group())
        elif kind == "string":
            place = _PLACE.search(clause)
            args[param] = place.group("what").strip(" ?.!") if place else clause
        else:
            return None
    return PlanStep(clause=clause, tool=t.name, args=args, progress=f"asking {t.name}…")


class OfflinePlanner:
    """The offline planner: a deterministic rule table, not a language model (see the module docs).

    ``step_time`` is the session time each step takes (so started, progress and final are spread out the way
    a real backend's would be, and a recording shows the stream)."""

    name = "offline-planner"

    def __init__(self, *, step_time: float = 0.2) -> None:
        if step_time < 0:
            raise ValueError(f"OfflinePlanner(step_time=...) must be >= 0 seconds, got {step_time!r}")
        self.step_time = step_time

    def plan(self, goal: str, available: Collection[str], tools: Iterable[Tool] = ()) -> list[PlanStep | str]:
        """One entry per clause of ``goal``: the tool call that answers it, or the clause itself (a string)
        when no available tool applies. ``tools`` are the registered tools beyond the built-in ones (plugins),
        each called when a clause names it (see :func:`_plugin_step`)."""
        plugins = [t for t in tools if t.name not in BUILTIN_TOOL_NAMES]
        steps: list[PlanStep | str] = []
        for raw in _CLAUSE_SPLIT.split(goal):
            clause = raw.strip(" ,.")
            if not clause:
                continue
            step = next((s for t in plugins if (s := _plugin_step(clause, t)) is not None), None)
            steps.append(step or self._plan_clause(clause, available) or clause)
        return steps

    def _plan_clause(self, clause: str, available: Collection[str]) -> PlanStep | None:
        seconds = _duration(clause)
        if "set_timer" in available and seconds is not None and _TIMER.search(clause):
            what = _REMIND_WHAT.search(clause)
            message = f"Reminder: {what.group('what').strip(' .')}." if what else ""
            args: dict[str, Any] = {"seconds": seconds}
            if message:
                args["message"] = message
            return PlanStep(clause=clause, tool="set_timer", args=args, progress="setting a timer…")
        expression = _arithmetic(clause)
        if "calculate" in available and expression is not None:
            return PlanStep(clause=clause, tool="calculate", args={"expression": expression}, progress="calculating…")
        if "session_time" in available and _TIME.search(clause):
            return PlanStep(clause=clause, tool="session_time", args={}, progress="checking the clock…")
        if "search_knowledge" in available:
            return PlanStep(
                clause=clause, tool="search_knowledge", args={"query": clause}, progress="checking the knowledge base…"
            )
        return None

    async def solve(self, task: Delegate, io: TaskIO) -> str:
        """Run the plan step by step, streaming progress; answer what could be answered."""
        steps = self.plan(task.goal, io.tools.names(), io.tools)
        answers: list[str] = []
        missed: list[str] = []
        for step in steps:
            if isinstance(step, str):
                missed.append(step)
                continue
            await io.progress(step.progress)
            if self.step_time:
                await io.sleep(self.step_time)
            result = await io.call_tool(step.tool, step.args)
            sentence = self._phrase(step, result)
            if sentence is None:
                missed.append(step.clause)
            else:
                answers.append(sentence)
        if not answers:
            raise ReasonerError(f"I could not find that: {task.goal.strip()}")
        for clause in missed:
            answers.append(f"I could not find anything about {clause!r}.")
        return " ".join(answers)

    def _phrase(self, step: PlanStep, result: ToolResult) -> str | None:
        if not result.ok:
            return None
        value = result.value
        if step.tool == "calculate" and isinstance(value, (int, float)):
            return f"{_spoken(step.args['expression'])} is {format_number(value)}."
        if step.tool == "session_time" and isinstance(value, (int, float)):
            return f"We have been talking for {say_duration(value)}."
        if step.tool == "set_timer" and isinstance(value, dict):
            return f"Okay, I will tell you in {say_duration(step.args['seconds'])}."
        if step.tool == "search_knowledge" and isinstance(value, list) and value:
            return str(value[0]["text"])
        if step.tool not in BUILTIN_TOOL_NAMES:  # a plugin tool: its answer as it gave it
            return value.strip() if isinstance(value, str) and value.strip() else f"{step.tool}: {value!r}"
        return None
