"""Hostile scenario files: nesting, sizes, out-of-range times and budgets, catastrophic regular expressions.

Every one must end in a ScenarioError that names the key (and the value where it is one), never a
RecursionError or a scenario that runs with an absurd budget."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.scenarios.builder import ScenarioBuilder
from microturn.scenarios.expectations import judge
from microturn.scenarios.format import (
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_SCENARIO_BYTES,
    MAX_SECONDS,
    MAX_STRING_CHARS,
    Says,
    Scenario,
    ScenarioError,
    decode_scenario,
    load_scenario,
    loads_scenario,
    pattern_problem,
)

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def error_of(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        loads_scenario(text)
    return caught.value


# --- nesting ---------------------------------------------------------------------------------------------------


@SETTINGS
@given(depth=st.integers(MAX_DEPTH + 1, 6000), brackets=st.lists(st.sampled_from(["[", "{a = "]), min_size=1))
def test_deep_arrays_and_inline_tables_are_refused_before_parsing(depth: int, brackets: list[str]) -> None:
    opens = [brackets[i % len(brackets)] for i in range(depth)]
    closes = ["]" if o == "[" else "}" for o in reversed(opens)]
    error = error_of("[model]\noptions = { x = " + "".join(opens) + "1" + "".join(closes) + " }\n")
    assert f"deeper than {MAX_DEPTH} levels" in error.reason and error.line == 2


@SETTINGS
@given(depth=st.integers(MAX_DEPTH, 6000))
def test_deep_dotted_keys_are_refused_with_their_key(depth: int) -> None:
    error = error_of("[model.options]\n" + ".".join(["k"] * depth) + " = 1\n")
    assert "nested deeper" in error.reason and error.key is not None and error.key.startswith("model.options.k.k")


@SETTINGS
@given(depth=st.integers(1, MAX_DEPTH - 3))
def test_nesting_within_the_limit_loads(depth: int) -> None:
    scenario = loads_scenario("[model]\noptions = { x = " + "[" * depth + "1" + "]" * depth + " }\n")
    value = scenario.model.options["x"]
    for _ in range(depth):
        value = value[0]
    assert value == 1


@SETTINGS
@given(quote=st.sampled_from(['"{}"', "'{}'", '"""{}"""', "'''{}'''", '"\\"{}"']), n=st.integers(MAX_DEPTH, 400))
def test_brackets_inside_strings_and_comments_do_not_count(quote: str, n: int) -> None:
    text = "description = " + quote.format("[" * n) + "  # " + "{" * n + "\n"
    assert "[" * n in loads_scenario(text).description
    # ...but a string does not hide the real nesting after it
    error = error_of(text + "[model]\noptions = { x = " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + " }\n")
    assert "deeper than" in error.reason


# --- sizes -----------------------------------------------------------------------------------------------------


def test_a_file_over_the_size_cap_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    path.write_bytes(b"# " + b"x" * (MAX_SCENARIO_BYTES * 3) + b"\n")
    with pytest.raises(ScenarioError, match=f"over {MAX_SCENARIO_BYTES} bytes") as caught:
        load_scenario(path)
    assert caught.value.file == str(path)


@SETTINGS
@given(extra=st.integers(1, 5000), where=st.sampled_from(["text", "tag", "result"]))
def test_a_string_over_the_cap_is_refused_naming_its_key(extra: int, where: str) -> None:
    long = "a" * (MAX_STRING_CHARS + extra)
    text = {
        "text": f'[[timeline]]\nkind = "say"\ntext = "{long}"\n',
        "tag": f'tags = ["ok", "{long}"]\n',
        "result": f'[[tools]]\nname = "t"\nresult = {{ deep = "{long}" }}\n',
    }[where]
    error = error_of(text)
    key = {"text": "timeline[0].text", "tag": "tags[1]", "result": "tools[0].result.deep"}[where]
    assert error.key == key and f"a string of {len(long)} characters" in error.reason and error.line is not None
    assert len(str(error)) < 300  # the value is shown cut short


@SETTINGS
@given(extra=st.integers(1, 50))
def test_a_list_over_the_cap_is_refused(extra: int) -> None:
    error = error_of("tags = [" + ", ".join(['"t"'] * (MAX_ITEMS + extra)) + "]\n")
    assert error.key == "tags" and f"{MAX_ITEMS + extra} entries" in error.reason


def test_a_scenario_built_in_python_has_the_same_limits() -> None:
    options: dict = {}
    inner = options
    for _ in range(MAX_DEPTH + 5):
        inner["k"] = {}
        inner = inner["k"]
    with pytest.raises(ScenarioError, match="nested deeper") as caught:
        ScenarioBuilder("deep").model("scripted", options=options).say("hi", at=0.0).build()
    assert caught.value.key is not None and caught.value.key.startswith("model.options.k")


# --- times and budgets -----------------------------------------------------------------------------------------

BAD_SECONDS = st.one_of(
    st.floats(MAX_SECONDS, 1e300, exclude_min=True), st.just(float("inf")), st.floats(-1e300, 0, exclude_max=True)
)


@SETTINGS
@given(value=BAD_SECONDS)
def test_budgets_are_finite_and_bounded(value: float) -> None:
    ms = value * 1000 if value != float("inf") else value
    error = error_of(f'[[expect]]\nkind = "responds_within"\nbudget_ms = {_toml_float(ms)}\n')
    assert error.key == "expect[0].budget_ms" and error.has_value and error.line == 3


@SETTINGS
@given(value=BAD_SECONDS, field=st.sampled_from(["at", "duration"]))
def test_event_times_and_the_duration_are_bounded(value: float, field: str) -> None:
    if field == "at":
        error = error_of(f'[[timeline]]\nkind = "say"\ntext = "hi"\nat = {_toml_float(value)}\n')
        assert error.key == "timeline[0].at"
    else:
        error = error_of(f"duration = {_toml_float(value)}\n")
        assert error.key == "duration"
    assert error.has_value


@SETTINGS
@given(ticks=st.integers(round(MAX_SECONDS / 0.2) + 1, 2**62))
def test_tick_budgets_and_delays_are_bounded(ticks: int) -> None:
    error = error_of(f'[[expect]]\nkind = "stops_within"\nbudget_ticks = {ticks}\n')
    assert error.key == "expect[0].budget_ticks" and error.value == ticks


def test_nan_is_refused() -> None:
    error = error_of('[[tools]]\nname = "t"\nlatency_ms = nan\n')
    assert error.key == "tools[0].latency_ms" and error.value == "nan"


def _toml_float(value: float) -> str:
    if value == float("inf"):
        return "inf"
    return repr(float(value))


# --- regular expressions ---------------------------------------------------------------------------------------

ATOMS = st.sampled_from(["a", r"\w", r"\d", ".", "[ab]", "(?:ab)", r"\s"])
QUANTS = st.sampled_from(["+", "*", "{2,}", "{1,5}"])


@SETTINGS
@given(atom=ATOMS, inner=QUANTS, outer=QUANTS, tail=st.sampled_from(["$", "", "x"]))
def test_nested_quantifiers_are_refused(atom: str, inner: str, outer: str, tail: str) -> None:
    pattern = f"({atom}{inner}){outer}{tail}"
    error = error_of(f"[[expect]]\nkind = \"says\"\npattern = '{pattern}'\n")
    assert error.key == "expect[0].pattern" and error.value == pattern and "catastrophically" in error.reason


@pytest.mark.parametrize("pattern", ["(a|a)+$", "(aa|a)+$", "(?:a|b|ab)+$", "(.|a)*$", r"(\w+\s?)*$", "(x+x+)+y"])
def test_ambiguous_repeats_are_refused(pattern: str) -> None:
    assert "catastrophically" in (pattern_problem(pattern) or "")


@pytest.mark.parametrize(
    "pattern",
    [r"\bbonjour\b", "(?:yes|no)+", "a*b*c", "(?:hello|help)+z", "a++", "(?>a+)+$", "(a|b)*c", "fran[cç]ais", "^ok$"],
)
def test_ordinary_patterns_are_allowed(pattern: str) -> None:
    assert pattern_problem(pattern) is None


def test_a_background_goal_is_checked_too() -> None:
    error = error_of("[[background]]\ngoal = '(a+)+$'\n")
    assert error.key == "background[0].goal" and "catastrophically" in error.reason


def test_an_unvalidated_pattern_from_a_recording_fails_its_expectation_instead_of_running() -> None:
    """decode_scenario (a recording's header) does not validate; judging must still never run the pattern."""
    scenario = decode_scenario(msgspec.to_builtins(Scenario(expect=[Says(pattern="(a+)+$")])))
    (outcome,) = judge(scenario, [])
    assert not outcome.ok and "cannot be judged" in outcome.observed
