"""The built-in tools called directly: safe arithmetic (a parser, never eval — fuzzed), session and elapsed
time, timers, knowledge search, and the default registry."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.tools import (
    CalculationError,
    KnowledgeBase,
    ToolContext,
    ToolError,
    calculate,
    calculate_expression,
    cancel_timer,
    default_registry,
    elapsed_time,
    format_number,
    make_search_knowledge,
    say_duration,
    session_time,
    set_timer,
)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 2", 4),
        ("(3 + 4) * 2^3", 56),
        ("2 ** 10", 1024),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 % 3", 2),
        ("12 × 7", 84),
        ("100 ÷ 8", 12.5),
        ("sqrt(16) + abs(-2)", 6),
        ("round(pi, 2)", 3.14),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("1e3 + 0.5", 1000.5),
        ("  +3  ", 3),
    ],
)
def test_arithmetic(expression: str, value: float) -> None:
    assert calculate_expression(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('echo pwned')", "not arithmetic|not allowed"),
        ("open('/etc/passwd').read()", "not arithmetic|not allowed"),
        ("(1).__class__", "Attribute is not arithmetic"),
        ("x + 1", "unknown name 'x'"),
        ("'a' * 3", "only numbers are allowed"),
        ("[1, 2]", "List is not arithmetic"),
        ("lambda: 1", "Lambda is not arithmetic"),
        ("2 ** 10 ** 10", "exponent 10000000000 is larger than 1000"),
        ("9 ** 999", "too large to compute"),
        ("1 / 0", "divides by zero"),
        ("sqrt(-1)", "has no value"),
        ("round(1, -10**9)", "digits must be a whole number within -100..100"),
        ("1 +", "cannot parse"),
        ("", "expression is empty"),
        ("1+" * 150 + "1", "the limit is 200"),
        ("True + 1", "only numbers are allowed"),
        ("1 < 2", "Compare is not arithmetic"),
    ],
)
def test_anything_but_arithmetic_is_refused(expression: str, message: str) -> None:
    with pytest.raises(CalculationError, match=message):
        calculate_expression(expression)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789+-*/^%().e pisqrt,×÷_a[]'\"", max_size=60))
def test_fuzzed_input_gives_a_number_or_a_calculation_error(text: str) -> None:
    try:
        value = calculate_expression(text)
    except CalculationError:
        return
    assert isinstance(value, (int, float)) and not isinstance(value, bool)


def test_numbers_and_durations_as_they_are_said() -> None:
    assert [format_number(v) for v in (42, 3.0, 0.30000000000000004, 1234567.891)] == ["42", "3", "0.3", "1.23457e+06"]
    assert [say_duration(s) for s in (1, 45.5, 90, 300, 3600, 5400)] == [
        "1 second", "45.5 seconds", "90 seconds", "5 minutes", "1 hour", "1 hour and 30 minutes"
    ]  # fmt: skip


async def test_calculate_is_a_tool_with_a_validated_expression() -> None:
    ctx = ToolContext.standalone()
    assert await calculate.invoke({"expression": "6 * 7"}, ctx) == 42
    with pytest.raises(ToolError, match="argument 'expression' = 42 is invalid"):
        await calculate.invoke({"expression": 42}, ctx)


async def test_session_time_and_elapsed_time(autojump_clock) -> None:
    ctx = ToolContext.standalone()
    await trio.sleep(12.5)
    assert await session_time.invoke({}, ctx) == 12.5
    assert await elapsed_time.invoke({"since": 10}, ctx) == 2.5
    with pytest.raises(ToolError, match=r"since=20.0 is in the future \(the session time is now 12.500\)"):
        await elapsed_time.invoke({"since": 20}, ctx)
    with pytest.raises(ToolError, match="argument 'since' = -1 is invalid: expected `float` >= 0"):
        await elapsed_time.invoke({"since": -1}, ctx)


async def test_a_timer_is_an_announcement_that_can_be_called_off(autojump_clock) -> None:
    ctx = ToolContext.standalone("call-7", "set_timer")
    got = await set_timer.invoke({"seconds": 300}, ctx)
    assert got == {"timer_id": "timer-call-7", "seconds": 300.0, "fires_at": 300.0}
    assert ctx.announcements == {"timer-call-7": (300.0, "Your timer for 5 minutes is done.", "interrupt")}
    await set_timer.invoke({"seconds": 5, "message": "Tea!"}, ToolContext.standalone("call-8", "set_timer"))
    assert await cancel_timer.invoke({"timer_id": "timer-call-7"}, ctx) is True
    assert await cancel_timer.invoke({"timer_id": "timer-call-7"}, ctx) is False
    with pytest.raises(ToolError, match="argument 'seconds' = 0 is invalid: expected `float` > 0.0"):
        await set_timer.invoke({"seconds": 0}, ctx)


async def test_progress_fractions_are_checked() -> None:
    ctx = ToolContext.standalone()
    await ctx.progress("half", 0.5)
    assert ctx.notes == [("half", 0.5)]
    with pytest.raises(ValueError, match="within 0..1"):
        await ctx.progress("too far", 1.5)


async def test_knowledge_search_answers_what_the_file_covers_and_nothing_else() -> None:
    search = make_search_knowledge()
    ctx = ToolContext.standalone()
    (best, *_) = await search.invoke({"query": "What is the capital of France?"}, ctx)
    assert best["text"] == "The capital of France is Paris." and best["coverage"] == 1.0
    hits = await search.invoke({"query": "what's the capital city of japan", "limit": 1}, ctx)
    assert [h["title"] for h in hits] == ["Capital of Japan"]
    assert (await search.invoke({"query": "how tall is mount everest"}, ctx))[0]["title"] == "Highest mountain"
    assert await search.invoke({"query": "what is the weather in Paris"}, ctx) == []  # half the question is not covered
    assert await search.invoke({"query": "the capital of Peru"}, ctx) == []
    with pytest.raises(ToolError, match="argument 'limit' = 0 is invalid"):
        await search.invoke({"query": "france", "limit": 0}, ctx)


async def test_a_knowledge_file_of_your_own(tmp_path) -> None:
    path = tmp_path / "facts.toml"
    path.write_text('[[facts]]\ntitle = "Office hours"\ntext = "The office opens at nine."\nkeywords = ["open"]\n')
    search = make_search_knowledge(path)
    assert (await search.invoke({"query": "when does the office open"}, ToolContext.standalone()))[0]["text"] == (
        "The office opens at nine."
    )
    path.write_text('[[facts]]\ntitle = 3\n')
    with pytest.raises(ToolError, match=r"knowledge file .*facts.toml is not valid: Expected `str`, got `int`"):
        KnowledgeBase.load(path)
    with pytest.raises(ToolError, match="cannot read the knowledge file"):
        KnowledgeBase.load(tmp_path / "missing.toml")


def test_the_default_registry_holds_every_built_in() -> None:
    registry = default_registry()
    assert registry.names() == [
        "calculate", "cancel_timer", "elapsed_time", "http_get", "search_knowledge", "session_time", "set_timer"
    ]  # fmt: skip
    assert all(t.description for t in registry) and not any(t.side_effects for t in registry)


def test_the_builtin_names_are_the_builtin_tools():
    from microturn.tools import BUILTIN_TOOL_NAMES, builtin_tools

    assert BUILTIN_TOOL_NAMES == {t.name for t in builtin_tools(http=())}
