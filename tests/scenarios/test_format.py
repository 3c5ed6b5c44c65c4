"""The scenario format: decoding, every error path (file, line, key and value named), the Python builder."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import numpy as np
import pytest

from microturn.audio import write_wav
from microturn.scenarios import format as fmt
from microturn.scenarios.builder import ScenarioBuilder
from microturn.scenarios.format import (
    Cough,
    Interrupt,
    Say,
    Scenario,
    ScenarioError,
    decode_scenario,
    encode_scenario,
    load_scenario,
    loads_scenario,
)

LIBRARY = Path(fmt.__file__).parent / "library"


def error_of(text: str, tmp_path: Path, name: str = "s.toml") -> ScenarioError:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    return caught.value


# --- what loads -------------------------------------------------------------------------------------------------


def test_the_documented_example_loads() -> None:
    example = fmt.__doc__.split("::", 1)[1].split('"""')[0]
    text = "\n".join(line[4:] for line in example.splitlines())
    scenario = loads_scenario(text)
    assert scenario.name == "barge-in-early"
    assert [type(e) for e in scenario.timeline] == [Say, Interrupt]
    assert scenario.timeline[1].after == "assistant_starts_speaking" and scenario.timeline[1].delay_ms == 600
    assert [e.budget for e in scenario.expect] == [1.0, 1.2]


@pytest.mark.parametrize("path", sorted(LIBRARY.glob("*.toml")), ids=lambda p: p.stem)
def test_every_library_scenario_loads_with_a_category_and_expectations(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.category != "uncategorized"
    assert scenario.expect and scenario.timeline


def test_name_defaults_to_the_file_stem_and_defaults_apply(tmp_path: Path) -> None:
    path = tmp_path / "my-case.toml"
    path.write_text('[[timeline]]\nkind = "say"\ntext = "hi"\n')
    scenario = load_scenario(path)
    assert scenario.name == "my-case"
    assert scenario.duration == 10.0 and scenario.model.name == "embedded" and scenario.speech.mode == "text"
    say = scenario.timeline[0]
    assert isinstance(say, Say) and say.role == "turn" and say.at is None and say.after is None


def test_relative_paths_resolve_against_the_scenario_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write_wav(tmp_path / "sub" / "hum.wav", np.zeros(1600, np.float32), 16000)
    path = tmp_path / "sub" / "s.toml"
    path.write_text('[[timeline]]\nkind = "play"\npath = "hum.wav"\n')
    play = load_scenario(path).timeline[0]
    assert play.path == str((tmp_path / "sub" / "hum.wav").resolve())


def test_encoding_round_trips() -> None:
    for path in sorted(LIBRARY.glob("*.toml")):
        scenario = load_scenario(path)
        data = encode_scenario(scenario)
        assert decode_scenario(msgspec.msgpack.decode(msgspec.msgpack.encode(data))) == scenario


def test_subkinds_keep_their_own_defaults() -> None:
    scenario = loads_scenario('[[timeline]]\nkind = "interrupt"\n[[timeline]]\nkind = "cough"\n')
    interrupt, cough = scenario.timeline
    assert isinstance(interrupt, Interrupt) and interrupt.role == "barge_in" and interrupt.text
    assert isinstance(cough, Cough) and cough.duration == 0.25 and cough.role == "noise"


# --- every error path -----------------------------------------------------------------------------------------

ERRORS = [
    # (id, TOML, line, key, value, reason pattern)
    ("toml-syntax", 'name = "x"\n\n[[timeline]\nkind = "say"\n', 3, None, None, r"invalid TOML: Expected '\]\]'"),
    ("toml-bad-value", 'name = "x"\nduration = 1.2.3\n', 2, None, None, r"invalid TOML"),
    ("unknown-top-key", 'name = "x"\nbogus = 1\n', 2, "bogus", 1, r"unknown key; known: name, description"),
    (
        "unknown-event-key",
        '[[timeline]]\nkind = "say"\ntext = "hi"\nspeed = 3\n',
        4,
        "timeline[0].speed",
        3,
        r"unknown key; known: id, at, after, .*text, role",
    ),
    ("unknown-model-key", '[model]\nnmae = "x"\n', 2, "model.nmae", "x", r"unknown key; known: name, options"),
    (
        "wrong-type",
        '[[timeline]]\nkind = "say"\ntext = "hi"\n\n[[timeline]]\nkind = "pause"\nduration = "long"\n',
        7,
        "timeline[1].duration",
        "long",
        r"Expected `float`, got `str`",
    ),
    ("wrong-type-top", "duration = true\n", 1, "duration", True, r"Expected `float`, got `bool`"),
    ("wrong-type-inline", 'timeline = [{kind = "say", text = 3}]\n', 1, "timeline[0].text", 3, r"Expected `str`"),
    ("unknown-event-kind", '[[timeline]]\nkind = "dance"\n', 2, "timeline[0].kind", "dance", r"unknown kind; known: say,"),
    ("missing-kind", '[[timeline]]\ntext = "hi"\n', 1, "timeline[0].kind", None, r"missing required key; known: say"),
    ("missing-text", '[[timeline]]\nkind = "say"\n', 1, "timeline[0].text", None, r"missing required key"),
    ("empty-text", '[[timeline]]\nkind = "say"\ntext = ""\n', 3, "timeline[0].text", "", r"length >= 1"),
    ("unknown-expect-kind", '[[expect]]\nkind = "fast"\n', 2, "expect[0].kind", "fast", r"unknown kind; known: responds"),
    ("negative-at", '[[timeline]]\nkind = "say"\ntext = "hi"\nat = -0.5\n', 4, "timeline[0].at", -0.5, r">= 0"),
    (
        "negative-delay",
        '[[timeline]]\nkind = "say"\ntext = "hi"\nafter = "start"\ndelay_ms = -5\n',
        5,
        "timeline[0].delay_ms",
        -5,
        r">= 0",
    ),
    ("zero-duration", '[[timeline]]\nkind = "pause"\nduration = 0\n', 3, "timeline[0].duration", 0, r"> 0"),
    ("negative-budget", '[[expect]]\nkind = "stops_within"\nbudget_ms = -1\n', 3, "expect[0].budget_ms", -1, r">= 0"),
    ("nth-zero", '[[timeline]]\nkind = "say"\ntext = "hi"\nafter = "start"\nnth = 0\n', 5, "timeline[0].nth", 0, r">= 1"),
    ("wpm-range", '[speech]\nwpm = 20\n', 2, "speech.wpm", 20, r">= 80"),
    ("bad-role", '[[timeline]]\nkind = "say"\ntext = "hi"\nrole = "boss"\n', 4, "timeline[0].role", "boss", r"Invalid"),
    (
        "unknown-reference",
        '[[timeline]]\nkind = "say"\ntext = "hi"\nafter = "assistant_start"\n',
        4,
        "timeline[0].after",
        "assistant_start",
        r"unknown reference; known: start, assistant_starts_speaking",
    ),
    (
        "unknown-dialog-state",
        '[[timeline]]\nkind = "say"\ntext = "hi"\nafter = "dialog:asleep"\n',
        4,
        "timeline[0].after",
        "dialog:asleep",
        r"unknown dialog state; known: dialog:speaking",
    ),
    (
        "unknown-user-mark",
        '[[timeline]]\nkind = "say"\ntext = "hi"\nafter = "user:sneeze"\n',
        4,
        "timeline[0].after",
        "user:sneeze",
        r"unknown user event mark; known: user:turn_end",
    ),
    (
        "unknown-custom-mark",
        '[[expect]]\nkind = "silent_between"\nstart = "mark:foo"\nend = 3\n',
        3,
        "expect[0].start",
        "mark:foo",
        r"no timeline 'mark' event publishes this mark",
    ),
    (
        "unknown-event-id",
        '[[timeline]]\nkind = "say"\ntext = "hi"\nafter = "event:nope"\n',
        4,
        "timeline[0].after",
        "event:nope",
        r"no timeline event has id 'nope'",
    ),
    (
        "bad-occurrence",
        '[[timeline]]\nkind = "say"\ntext = "hi"\nafter = "user:turn_end#0"\n',
        4,
        "timeline[0].after",
        "user:turn_end#0",
        r"occurrence number >= 1",
    ),
    (
        "occurrence-twice",
        '[[timeline]]\nkind = "say"\ntext = "hi"\nafter = "assistant_starts_speaking#2"\nnth = 3\n',
        4,
        "timeline[0].after",
        "assistant_starts_speaking#2",
        r"either as '#N' or as 'nth'",
    ),
    (
        "nth-of-an-event",
        '[[timeline]]\nid = "a"\nkind = "say"\ntext = "hi"\n[[timeline]]\nkind = "say"\ntext = "x"\n'
        'after = "event:a"\nnth = 2\n',
        8,
        "timeline[1].after",
        "event:a",
        r"an event happens once",
    ),
    (
        "at-and-after",
        '[[timeline]]\nkind = "say"\ntext = "hi"\nat = 1\nafter = "start"\n',
        5,
        "timeline[0].after",
        "start",
        r"either 'at' \(seconds\) or 'after'",
    ),
    (
        "two-delays",
        '[[timeline]]\nkind = "say"\ntext = "hi"\nafter = "start"\ndelay_ms = 5\ndelay_ticks = 1\n',
        6,
        "timeline[0].delay_ticks",
        1,
        r"either 'delay_ms' or 'delay_ticks'",
    ),
    (
        "delay-without-after",
        '[[timeline]]\nkind = "say"\ntext = "hi"\nat = 1\ndelay_ms = 5\n',
        5,
        "timeline[0].delay_ms",
        5.0,
        r"need 'after'",
    ),
    (
        "cycle",
        '[[timeline]]\nid = "a"\nkind = "say"\ntext = "hi"\nafter = "event:b"\n'
        '[[timeline]]\nid = "b"\nkind = "say"\ntext = "hi"\nafter = "event:a"\n',
        5,
        "timeline[0].after",
        "event:b",
        r"go round in a circle",
    ),
    (
        "duplicate-id",
        '[[timeline]]\nid = "a"\nkind = "say"\ntext = "hi"\n[[timeline]]\nid = "a"\nkind = "say"\ntext = "x"\n',
        6,
        "timeline[1].id",
        "a",
        r"duplicate event id \(also timeline\[0\]\)",
    ),
    ("bad-id", '[[timeline]]\nid = "a b"\nkind = "say"\ntext = "hi"\n', 2, "timeline[0].id", "a b", r"letters"),
    (
        "missing-wav",
        '[[timeline]]\nkind = "play"\npath = "missing.wav"\n',
        3,
        "timeline[0].path",
        "missing.wav",
        r"no such file \(.*missing.wav\)",
    ),
    (
        "image-extension",
        '[[timeline]]\nkind = "image"\npath = "s.toml"\n',
        3,
        "timeline[0].path",
        "s.toml",
        r"must be .png, .jpg or .jpeg",
    ),
    ("no-budget", '[[expect]]\nkind = "responds_within"\n', 1, "expect[0].budget_ms", None, r"a budget is required"),
    (
        "two-budgets",
        '[[expect]]\nkind = "heard_within"\nbudget_ms = 100\nbudget_ticks = 2\n',
        4,
        "expect[0].budget_ticks",
        2,
        r"either 'budget_ms' or 'budget_ticks'",
    ),
    ("bad-regex", '[[expect]]\nkind = "says"\npattern = "(open"\n', 3, "expect[0].pattern", "(open", r"regular expr"),
    (
        "bad-goal-regex",
        '[[background]]\ngoal = "[x"\n',
        2,
        "background[0].goal",
        "[x",
        r"not a valid regular expression",
    ),
    ("dialog-timing", "[dialog]\nbargein = 0.3\n", 2, "dialog.bargein", 0.3, r"unknown dialog timing; known: onset"),
    (
        "duplicate-tool",
        '[[tools]]\nname = "t"\n[[tools]]\nname = "t"\n',
        4,
        "tools[1].name",
        "t",
        r"tool declared twice",
    ),
    (
        "silent-between-backwards",
        '[[expect]]\nkind = "silent_between"\nstart = 3\nend = 1\n',
        4,
        "expect[0].end",
        1.0,
        r"'end' is before 'start'",
    ),
    ("says-backwards", '[[expect]]\nkind = "says"\npattern = "x"\nstart = 3\nend = 1\n', 5, "expect[0].end", 1.0,
     r"'end' is before 'start'"),
    ("says-bad-window", '[[expect]]\nkind = "says"\npattern = "x"\nstart = "mark:nope"\n', 4, "expect[0].start",
     "mark:nope", r"no timeline 'mark' event publishes this mark"),
    ("unknown-world-key", '[world]\ntool = "builtin"\n', 2, "world.tool", "builtin",
     r"unknown key; known: tools, background"),
    ("bad-world-tools", '[world]\ntools = "real"\n', 2, "world.tools", "real", r"Invalid enum value"),
    ("scripted-tools-in-a-builtin-world", '[world]\ntools = "builtin"\n[[tools]]\nname = "t"\n', 4, "tools[0].name",
     "t", r"\[\[tools\]\] scripts the scripted tool runner; with world.tools = 'builtin' the real tools answer"),
    ("scripted-background-in-an-offline-world",
     '[world]\ntools = "builtin"\nbackground = "offline"\n[[background]]\nresult = "x"\n', 4, "background[0]", None,
     r"\[\[background\]\] scripts the scripted reasoner"),
    ("offline-needs-builtin-tools", '[world]\nbackground = "offline"\n', 2, "world.background", "offline",
     r'the offline planner calls the built-in tools: it needs world.tools = "builtin"'),
    ("image-color-range", '[[timeline]]\nkind = "image"\npattern = "solid"\ncolor = [300, 0, 0]\n', 4,
     "timeline[0].color[0]", 300, r"Expected `int` <= 255"),
]


@pytest.mark.parametrize(("text", "line", "key", "value", "reason"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_file_line_key_and_value(tmp_path: Path, text, line, key, value, reason) -> None:
    error = error_of(text, tmp_path)
    message = str(error)
    assert error.file == str(tmp_path / "s.toml") and message.startswith(f"{tmp_path / 's.toml'}:{line}: ")
    assert error.line == line
    assert error.key == key
    if value is not None:
        assert error.value == value and repr(value) in message
    assert re.search(reason, error.reason), error.reason
    assert re.search(reason, message)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.toml: no such scenario file"):
        load_scenario(tmp_path / "nope.toml")


def test_text_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(path)


def test_a_scenario_error_is_a_microturn_error() -> None:
    from microturn.runtime import MicroturnError

    assert issubclass(ScenarioError, MicroturnError)


# --- the Python API -------------------------------------------------------------------------------------------

FULL_TOML = """
name = "everything"
description = "all kinds"
category = "demo"
tags = ["a", "b"]
duration = 12.5

[model]
name = "scripted"
options = { words_per_tick = 0.5 }
seed = 3

[speech]
mode = "text"
wpm = 240

[dialog]
barge_in = 0.4

[[timeline]]
id = "hello"
kind = "say"
at = 0.4
text = "hello there"

[[timeline]]
kind = "pause"
duration = 1.0

[[timeline]]
kind = "say"
after = "event:hello"
delay_ms = 1500
text = "and more"
role = "partial"
mode = "speech"
wpm = 200
voice = "en-gb"
transcript = false

[[timeline]]
kind = "interrupt"
after = "assistant_starts_speaking"
nth = 2
delay_ticks = 2

[[timeline]]
kind = "play"
path = "hum.wav"
transcript = "hmm"
role = "backchannel"
after = "dialog:yielding"

[[timeline]]
kind = "image"
pattern = "gradient"
width = 64
height = 48
at = 2

[[timeline]]
kind = "silence"
duration = 0.5

[[timeline]]
kind = "noise"
level = 0.2
seed = 7
at = 3

[[timeline]]
kind = "cough"
after = "user:barge_in"
delay_ms = 100

[[timeline]]
kind = "mark"
name = "here"
at = 4

[[tools]]
name = "session_time"
latency_ms = 120

[[tools]]
name = "weather"
error = "offline"

[[background]]
goal = "capital"
latency_ms = 900
result = "Paris."
delivery = "interrupt"
progress = ["looking"]
started = true

[[expect]]
kind = "responds_within"
budget_ms = 600

[[expect]]
kind = "silent_between"
start = "user:pause"
end = "mark:here"
backchannels = false

[[expect]]
kind = "stops_within"
budget_ticks = 1
nth = 2

[[expect]]
kind = "keeps_speaking"
after = "user:noise"

[[expect]]
kind = "heard_within"
budget_ms = 2000

[[expect]]
kind = "says"
pattern = "hello"
name = "greets"

[[expect]]
kind = "does_not_say"
pattern = "goodbye"

[[expect]]
kind = "tool_called"
tool = "session_time"

[[expect]]
kind = "no_tool_called"
"""


def test_the_builder_makes_the_same_scenario_as_toml(tmp_path: Path) -> None:
    write_wav(tmp_path / "hum.wav", np.zeros(1600, np.float32), 16000)
    (tmp_path / "full.toml").write_text(FULL_TOML)
    from_toml = load_scenario(tmp_path / "full.toml")
    built = (
        ScenarioBuilder("everything", description="all kinds", category="demo", tags=["a", "b"], duration=12.5,
                        base_dir=tmp_path)
        .model("scripted", options={"words_per_tick": 0.5}, seed=3)
        .speech("text", wpm=240)
        .dialog(barge_in=0.4)
        .say("hello there", at=0.4, id="hello")
        .pause(1.0)
        .say("and more", after="event:hello", delay_ms=1500, role="partial", mode="speech", wpm=200, voice="en-gb",
             transcript=False)
        .interrupt(after="assistant_starts_speaking", nth=2, delay_ticks=2)
        .play("hum.wav", transcript="hmm", role="backchannel", after="dialog:yielding")
        .image(pattern="gradient", width=64, height=48, at=2)
        .silence(0.5)
        .noise(level=0.2, seed=7, at=3)
        .cough(after="user:barge_in", delay_ms=100)
        .mark("here", at=4)
        .tool("session_time", latency_ms=120)
        .tool("weather", error="offline")
        .background(goal="capital", latency_ms=900, result="Paris.", delivery="interrupt", progress=["looking"],
                    started=True)
        .expect_responds_within(600)
        .expect_silent_between("user:pause", "mark:here", backchannels=False)
        .expect_stops_within(budget_ticks=1, nth=2)
        .expect_keeps_speaking(after="user:noise")
        .expect_heard_within(2000)
        .expect_says("hello", name="greets")
        .expect_does_not_say("goodbye")
        .expect_tool_called("session_time")
        .expect_no_tool_called()
        .build()
    )
    assert built == from_toml
    assert decode_scenario(encode_scenario(built)) == from_toml


def test_the_builder_checks_types_ranges_and_references() -> None:
    with pytest.raises(ScenarioError, match=r"timeline\[0\]\.at = -1: Expected `float` >= 0"):
        ScenarioBuilder("x").say("hi", at=-1).build()
    with pytest.raises(ScenarioError, match=r"timeline\[0\]\.at = 'soon': Expected"):
        ScenarioBuilder("x").say("hi", at="soon").build()  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match=r"timeline\[1\]\.after = 'event:nope': no timeline event has id"):
        ScenarioBuilder("x").say("hi").say("more", after="event:nope").build()
    with pytest.raises(ScenarioError, match=r"expect\[0\]\.budget_ms: a budget is required"):
        ScenarioBuilder("x").expect_responds_within().build()
    with pytest.raises(ScenarioError, match=r"timeline\[0\]\.path = 'nope.wav': no such file"):
        ScenarioBuilder("x").play("nope.wav").build()


WORLD_TOML = """
name = "world"
[world]
tools = "builtin"
background = "offline"

[[timeline]]
id = "q"
kind = "say"
text = "what do you see?"

[[timeline]]
kind = "image"
pattern = "solid"
color = [220, 40, 40]

[[expect]]
kind = "says"
pattern = "red"
start = "event:q:start"
end = 4

[[expect]]
kind = "does_not_say"
pattern = "blue"
start = "event:q"
"""


def test_world_image_colour_and_says_windows_load_build_and_round_trip() -> None:
    from_toml = loads_scenario(WORLD_TOML)
    assert (from_toml.world.tools, from_toml.world.background) == ("builtin", "offline")
    assert from_toml.timeline[1].color == (220, 40, 40)
    assert (from_toml.expect[0].start, from_toml.expect[0].end) == ("event:q:start", 4.0)
    built = (
        ScenarioBuilder("world")
        .world(tools="builtin", background="offline")
        .say("what do you see?", id="q")
        .image(pattern="solid", color=(220, 40, 40))
        .expect_says("red", start="event:q:start", end=4)
        .expect_does_not_say("blue", start="event:q")
        .build()
    )
    assert built == from_toml
    assert decode_scenario(encode_scenario(built)) == from_toml
    assert loads_scenario("").world == fmt.WorldConfig()  # the default: the scripted doubles
    with pytest.raises(ScenarioError, match=r"world.tools = 'real'"):
        ScenarioBuilder("x").world(tools="real").build()


def test_a_builder_scenario_is_a_plain_scenario() -> None:
    scenario = ScenarioBuilder("x").say("hi", at=0.2).expect_says("hello").build()
    assert isinstance(scenario, Scenario) and scenario.timeline[0].at == 0.2
