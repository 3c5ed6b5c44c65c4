"""The runner: expectations judged from messages, the scripted world, determinism, replay, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from msgspec.structs import replace

from microturn.messages import (
    BackgroundUpdate,
    Delegate,
    Heard,
    Interrupt,
    Mark,
    Message,
    OutputChunk,
    Playout,
    SpeechEnded,
    SpeechStarted,
    Stamp,
    Tick,
    ToolCall,
    ToolResult,
)
from microturn.runtime import Actor, open_session, read_recording, replay
from microturn.scenarios import format as fmt
from microturn.scenarios.builder import ScenarioBuilder
from microturn.cli import main as cli_main
from microturn.scenarios.expectations import judge
from microturn.scenarios.format import ScenarioError
from microturn.scenarios.runner import build_actors, format_result, run, run_scenario, run_suite

LIBRARY = Path(fmt.__file__).parent / "library"


def _espeak() -> bool:
    from microturn.audio import espeak_available

    return espeak_available()


# --- judging, from hand-made message streams ----------------------------------------------------------------


class Stream:
    """Builds a stamped message stream in bus order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def add(self, message: Message, t: float) -> Stream:
        seq = len(self.messages) + 1
        self.messages.append(replace(message, stamp=Stamp(tick=int(t / 0.2 + 1e-9), seq=seq, source="x", time=t)))
        return self

    def utterance(self, uid: int, start_tick: int, words: list[str], *, backchannel: bool = False,
                  cut_at_tick: int | None = None) -> Stream:
        """An utterance starting at the start of window ``start_tick``, one word per two windows."""
        controls = ["backchannel"] if backchannel else ["speak"]
        self.add(SpeechStarted(utterance_id=uid, generation=uid), start_tick * 0.2)
        self.add(OutputChunk(tick=start_tick, generation=uid, text=words[0], controls=controls), start_tick * 0.2)
        tick = start_tick
        played = []
        for word in words:
            for text in (word, ""):
                if cut_at_tick is not None and tick >= cut_at_tick:
                    self.add(Interrupt(generation=uid, reason="user_interrupting"), cut_at_tick * 0.2)
                    self.add(Heard(utterance_id=uid, text_heard=" ".join(played), truncated=True), cut_at_tick * 0.2)
                    self.add(SpeechEnded(utterance_id=uid, generation=uid, reason="interrupted"), cut_at_tick * 0.2)
                    return self
                self.add(Playout(tick=tick, utterance_id=uid, text=text), (tick + 1) * 0.2)
                if text:
                    played.append(text)
                tick += 1
        self.add(Heard(utterance_id=uid, text_heard=" ".join(played), truncated=False), tick * 0.2)
        self.add(SpeechEnded(utterance_id=uid, generation=uid, reason="completed"), tick * 0.2)
        return self


def outcomes(builder: ScenarioBuilder, stream: Stream, **kwargs):
    return judge(builder.build(), stream.messages, **kwargs)


def test_responds_within_measures_from_the_mark_to_the_first_heard_word() -> None:
    s = Stream().add(Mark(name="user:turn_end"), 1.1).utterance(1, 8, ["Hi", "there."])
    (ok,) = outcomes(ScenarioBuilder("x").expect_responds_within(600), s)
    assert ok.ok and ok.time == 1.1
    assert ok.observed == (
        'assistant started speaking 500 ms after user:turn_end at 1.100 s (budget 600 ms, within): "Hi there."'
    )
    (late,) = outcomes(ScenarioBuilder("x").expect_responds_within(400, name="quick"), s)
    assert not late.ok and late.name == "quick"
    assert late.observed.startswith("assistant started speaking 500 ms after user:turn_end at 1.100 s (budget 400 ms, over)")
    (ticks,) = outcomes(ScenarioBuilder("x").expect_responds_within(budget_ticks=3), s)
    assert ticks.ok and "budget 600 ms" in ticks.observed


def test_responds_within_ignores_backchannels_and_speech_already_under_way() -> None:
    s = (
        Stream()
        .utterance(1, 2, ["Hello", "there", "friend"])
        .add(Mark(name="user:turn_end"), 0.6)
        .utterance(2, 12, ["mm-hm"], backchannel=True)
    )
    (o,) = outcomes(ScenarioBuilder("x").expect_responds_within(1000), s)
    assert not o.ok
    assert o.observed == (
        "assistant never started speaking after user:turn_end at 0.600 s (budget 1000 ms); "
        "it was already speaking from 0.400 s"
    )


def test_a_reference_that_never_happened_fails_and_says_so() -> None:
    (o,) = outcomes(ScenarioBuilder("x").expect_responds_within(600, nth=2), Stream().add(Mark(name="user:turn_end"), 1))
    assert not o.ok and o.time is None
    assert o.observed == "user:turn_end #2 never happened (it happened 1 time)"


def test_silent_between_catches_words_and_allows_backchannels_by_default() -> None:
    s = (
        Stream()
        .add(Mark(name="user:pause"), 1.0)
        .utterance(1, 6, ["mm-hm"], backchannel=True)
        .add(Mark(name="user:pause_end"), 3.0)
        .utterance(2, 16, ["Okay."])
    )
    (quiet,) = outcomes(ScenarioBuilder("x").expect_silent_between("user:pause", "user:pause_end"), s)
    assert quiet.ok
    assert quiet.observed == (
        "assistant said nothing between user:pause (1.000 s) and user:pause_end (3.000 s) (backchannels allowed)"
    )
    (strict,) = outcomes(
        ScenarioBuilder("x").expect_silent_between("user:pause", "user:pause_end", backchannels=False), s
    )
    assert not strict.ok
    assert strict.observed == (
        'assistant backchannelled "mm-hm" from 1.200 s, between user:pause (1.000 s) and user:pause_end (3.000 s)'
    )
    (times,) = outcomes(ScenarioBuilder("x").expect_silent_between(2.0, 4.0), s)
    assert not times.ok and times.observed.startswith('assistant said "Okay." from 3.200 s, between 2.000 s')


def test_stops_within_measures_to_the_end_of_the_last_window_heard() -> None:
    s = Stream().utterance(1, 5, ["one", "two", "three", "four"], cut_at_tick=9).add(Mark(name="user:barge_in"), 1.4)
    s.messages.sort(key=lambda m: m.stamp.time)  # the mark belongs before the cut on the bus
    (o,) = outcomes(ScenarioBuilder("x").expect_stops_within(500), s)
    assert o.ok
    assert o.observed == (
        "assistant stopped 400 ms after user:barge_in at 1.400 s (budget 500 ms, within): it was cut "
        '(user_interrupting) after "one two", last heard in the window ending 1.800 s'
    )
    (tight,) = outcomes(ScenarioBuilder("x").expect_stops_within(200), s)
    assert not tight.ok and "(budget 200 ms, over)" in tight.observed
    (idle,) = outcomes(ScenarioBuilder("x").expect_stops_within(200), Stream().add(Mark(name="user:barge_in"), 1.0))
    assert not idle.ok and idle.observed == "assistant was not speaking at user:barge_in (1.000 s)"


def test_keeps_speaking_passes_when_the_utterance_completes_and_fails_when_cut() -> None:
    done = Stream().utterance(1, 5, ["one", "two", "three"]).add(Mark(name="user:backchannel"), 1.5)
    (ok,) = outcomes(ScenarioBuilder("x").expect_keeps_speaking(), done)
    assert ok.ok
    assert ok.observed == (
        'assistant went on through user:backchannel at 1.500 s and completed "one two three" at 2.200 s'
    )
    cut = Stream().utterance(1, 5, ["one", "two", "three"], cut_at_tick=9).add(Mark(name="user:noise"), 1.5)
    cut.messages.sort(key=lambda m: m.stamp.time)
    (bad,) = outcomes(ScenarioBuilder("x").expect_keeps_speaking(after="user:noise"), cut)
    assert not bad.ok
    assert bad.observed == (
        'assistant was cut (user_interrupting) at 1.800 s, 300 ms after user:noise at 1.500 s; heard only "one two"'
    )


def test_heard_within_finds_the_utterance_that_carries_the_result() -> None:
    s = (
        Stream()
        .add(BackgroundUpdate(task_id="task-1", status="final", text="The capital of France is Paris."), 2.1)
        .utterance(1, 12, ["Okay."])
        .utterance(2, 20, ["The", "capital", "of", "France", "is", "Paris."])
    )
    (o,) = outcomes(ScenarioBuilder("x").expect_heard_within(2000), s)
    assert o.ok
    assert o.observed == (
        "the background result (task-1, final, when_idle) arrived at 2.100 s and was heard 1900 ms later, from "
        '4.000 s (budget 2000 ms, within): "The capital of France is Paris."'
    )
    (never,) = outcomes(ScenarioBuilder("x").expect_heard_within(2000), Stream())
    assert not never.ok and never.observed == "background_result never happened"
    tool = Stream().add(ToolResult(call_id="t-1", ok=True, value=1), 1.0).utterance(1, 8, ["It", "is", "one."])
    (o,) = outcomes(ScenarioBuilder("x").expect_heard_within(1000, after="tool_result"), tool)
    assert o.ok and o.observed == (
        'tool_result (1.000 s): the assistant was heard 600 ms later, from 1.600 s (budget 1000 ms, within): "It is one."'
    )


def test_says_and_tool_expectations() -> None:
    s = (
        Stream()
        .utterance(1, 2, ["Let", "me", "check."])
        .add(ToolCall(call_id="session_time-1", name="session_time"), 0.4)
        .add(ToolResult(call_id="session_time-1", ok=True, value=0.45, elapsed=0.05), 0.45)
    )
    b = (
        ScenarioBuilder("x")
        .expect_says(r"let me CHECK")
        .expect_does_not_say("check")
        .expect_says("weather")
        .expect_tool_called("session_time")
        .expect_tool_called("weather")
        .expect_no_tool_called()
        .expect_no_tool_called("weather")
    )
    got = [(o.ok, o.observed) for o in outcomes(b, s)]
    assert got == [
        (True, 'assistant said "Let me check." from 0.400 s'),
        (False, 'assistant said "Let me check." from 0.400 s (it must not)'),
        (False, 'no assistant utterance matched /weather/; heard: "Let me check." at 0.400 s'),
        (True, "session_time called at 0.400 s (session_time-1, ok 0.45 after 50 ms)"),
        (False, "no call of weather (other tools called: session_time)"),
        (False, "session_time called at 0.400 s (session_time-1, ok 0.45 after 50 ms) (it must not be)"),
        (True, "no call of weather (other tools called: session_time)"),
    ]


def test_says_can_be_limited_to_a_window() -> None:
    s = Stream().utterance(1, 2, ["Okay."]).add(Mark(name="mark:due"), 2.0).utterance(2, 11, ["Reminder:", "stretch."])
    b = (
        ScenarioBuilder("x")
        .mark("due", at=2.0)
        .expect_says("stretch", start="mark:due", end=3.0)
        .expect_says("stretch", start=2.4)
        .expect_says("okay", end="mark:due")
        .expect_does_not_say("stretch", end="mark:due")
        .expect_does_not_say("okay", start="mark:due")
    )
    got = [(o.name, o.ok, o.observed) for o in outcomes(b, s)]
    assert got[0] == ("says /stretch/ between mark:due and 3.000 s", True,
                      'assistant said "Reminder: stretch." from 2.200 s')
    assert got[1][:2] == ("says /stretch/ from 2.400 s", False)
    assert got[1][2].startswith("no assistant utterance first heard between 2.400 s and the end matched /stretch/")
    assert [o[1] for o in got[2:]] == [True, True, True]
    assert got[3][0] == "does not say /stretch/ before mark:due"
    (never,) = outcomes(ScenarioBuilder("x").mark("due", at=2.0).expect_says("x", start="mark:due"), Stream())
    assert not never.ok and never.observed == "mark:due never happened"


def test_an_utterance_cut_at_the_anchors_instant_was_still_under_way() -> None:
    # Cut between two words, exactly at a window boundary: no word sounds at the anchor, yet it was speaking.
    s = Stream().utterance(1, 5, ["one", "two", "three"], cut_at_tick=8).add(Mark(name="mark:due"), 1.6)
    b = ScenarioBuilder("x").mark("due", at=1.6).expect_stops_within(200, after="mark:due")
    (o,) = outcomes(b, s)
    assert o.ok and o.observed.startswith("assistant stopped 0 ms after mark:due at 1.600 s (budget 200 ms, within): "
                                          'it was cut (user_interrupting) after "one two"')


def test_event_references_need_the_runners_event_times() -> None:
    b = ScenarioBuilder("x").say("hi", id="a").expect_responds_within(500, after="event:a")
    (o,) = outcomes(b, Stream())
    assert not o.ok and "event times are not in the messages" in o.observed
    (o,) = outcomes(b, Stream().utterance(1, 3, ["Hi."]), event_times={"a": (0.0, 0.4)})
    assert o.ok and o.observed.startswith("assistant started speaking 200 ms after event:a at 0.400 s")


# --- whole runs ---------------------------------------------------------------------------------------------------


def text_scenario(**kw) -> ScenarioBuilder:
    return ScenarioBuilder("t", duration=kw.pop("duration", 8.0), **kw).model("scripted")


class Asks(Actor):
    """Plays the interaction actor's side towards the world: a tool call and a delegation at given ticks."""

    subscriptions = (Tick,)

    def __init__(self, plan: dict[int, list[Message]]) -> None:
        super().__init__("interaction")
        self.plan = plan

    async def handle(self, message: object) -> None:
        if isinstance(message, Tick):
            for m in self.plan.get(message.tick, []):
                await self.publish(m)


async def world(scenario, plan: dict[int, list[Message]]) -> list[Message]:
    from microturn.actors import ClockActor
    from microturn.scenarios.scripted_world import DEFAULT_TOOLS, ScriptedBackground, ScriptedToolRunner

    seen: list[Message] = []
    actors = [ClockActor(), Asks(plan), ScriptedBackground(scenario.background),
              ScriptedToolRunner(scenario.tools or DEFAULT_TOOLS)]
    async with open_session(actors, taps=[seen.append]) as session:
        await session.run_for(4.0)
    return seen


async def test_the_scripted_world_answers_as_declared(autojump_clock) -> None:
    scenario = (
        ScenarioBuilder("t")
        .tool("session_time", latency_ms=250, error="clock broken")
        .tool("lookup", latency_ms=100, result={"answer": 42})
        .background(goal="capital", latency_ms=800, result="Paris.", progress=["searching"], started=True)
        .background(latency_ms=300, error="no idea", delivery="interrupt")
        .build()
    )
    plan = {
        2: [ToolCall(call_id="session_time-1", name="session_time"), ToolCall(call_id="lookup-2", name="lookup"),
            ToolCall(call_id="x-3", name="x")],
        4: [Delegate(task_id="task-1", goal="What is the CAPITAL of France?"), Delegate(task_id="task-2", goal="why")],
    }
    seen = await world(scenario, plan)
    results = [(round(m.stamp.time, 6), m.call_id, m.ok, m.value, m.error, m.elapsed)
               for m in seen if isinstance(m, ToolResult)]
    assert results == [
        (0.6, "x-3", False, None, "unknown tool 'x' (this scenario's tools: session_time, lookup)", 0.0),
        (0.7, "lookup-2", True, {"answer": 42}, None, 0.1),
        (0.85, "session_time-1", False, None, "clock broken", 0.25),
    ]
    updates = [(round(m.stamp.time, 6), m.task_id, m.status, m.text, m.delivery)
               for m in seen if isinstance(m, BackgroundUpdate)]
    assert updates == [
        (1.0, "task-1", "started", "", "silent"),
        (1.3, "task-2", "failed", "no idea", "interrupt"),
        (1.4, "task-1", "progress", "searching", "silent"),
        (1.8, "task-1", "final", "Paris.", "when_idle"),
    ]


async def test_the_default_world_is_the_demo_stand_ins(autojump_clock) -> None:
    seen = await world(ScenarioBuilder("t").build(), {2: [ToolCall(call_id="session_time-1", name="session_time"),
                                                          Delegate(task_id="task-1", goal="anything")]})
    result = next(m for m in seen if isinstance(m, ToolResult))
    assert (result.ok, result.value, result.elapsed) == (True, 0.65, 0.05)
    update = next(m for m in seen if isinstance(m, BackgroundUpdate))
    assert update.status == "final" and update.text.startswith("I have no background reasoner yet")
    assert update.stamp.time == pytest.approx(1.6)


async def test_a_goal_no_behaviour_matches_fails_honestly(autojump_clock) -> None:
    seen = await world(ScenarioBuilder("t").background(goal="weather").build(),
                       {2: [Delegate(task_id="task-1", goal="the capital of France")]})
    update = next(m for m in seen if isinstance(m, BackgroundUpdate))
    assert update.status == "failed" and "no scripted background behaviour matches" in update.text


@pytest.mark.skipif(not _espeak(), reason="espeak-ng is not installed")
async def test_a_failing_tool_is_apologised_for_end_to_end(autojump_clock) -> None:
    scenario = (
        ScenarioBuilder("t", duration=10)
        .speech("speech")
        .say("what time is it?", at=0.4)
        .tool("session_time", latency_ms=250, error="clock broken")
        .expect_says("session time tool failed")
        .build()
    )
    result = await run(scenario, model="scripted")
    assert result.ok, result.failures


def test_an_unknown_model_names_the_known_ones() -> None:
    scenario = text_scenario().say("hi").build()
    with pytest.raises(ScenarioError, match=r"--model = 'gpt': unknown model; known: embedded, local, scripted, sglang, sglang-text"):
        run_scenario(scenario, model="gpt")
    bad = ScenarioBuilder("t").model("nope").say("hi").build()
    with pytest.raises(ScenarioError, match=r"model.name = 'nope': unknown model; known: embedded, local, scripted, sglang, sglang-text"):
        run_scenario(bad)
    refused = ScenarioBuilder("t").model("scripted", options={"speed": 2}).say("hi").build()
    with pytest.raises(ScenarioError, match=r"model.name = 'scripted': the scripted model refuses the options \{'speed': 2\}"):
        run_scenario(refused)


def test_the_same_run_twice_is_identical_text_and_recording(tmp_path: Path) -> None:
    path = LIBRARY / "tool-session-time.toml" if _espeak() else LIBRARY / "smooth-turn-text.toml"
    first = run_scenario(path, record=tmp_path / "a.mtrec")
    second = run_scenario(path, record=tmp_path / "b.mtrec")
    assert format_result(first) == format_result(second)
    assert (tmp_path / "a.mtrec").read_bytes() == (tmp_path / "b.mtrec").read_bytes()
    assert first.outcomes == second.outcomes


async def test_a_scenario_recording_replays_bit_for_bit(autojump_clock, tmp_path: Path) -> None:
    scenario = (
        text_scenario(duration=10)
        .say("what is the capital of France?", at=0.4)
        .interrupt("no wait stop please", after="assistant_starts_speaking", delay_ms=300)
        .mark("answer", after="background_result")  # zero delay after what an actor's timer published
        .noise(after="mark:answer", duration=0.2)
        .image(after="dialog:yielding#2", delay_ticks=1)
        .build()
    )
    record = tmp_path / "s.mtrec"
    result = await run(scenario, record=record)
    rec = read_recording(record)
    assert rec.header.factory == "microturn.scenarios.runner:build_actors"
    assert rec.header.meta["scenario"] == "t"
    assert len(result.fired) == 5
    replayed = await replay(record)
    assert replayed.ok, replayed.divergence
    assert replayed.compared == len(rec.messages)


def live_world_scenario() -> ScenarioBuilder:
    """A text scenario that needs the real tools (set_timer, calculate) and the offline planner."""
    return (
        text_scenario(duration=19)
        .world(tools="builtin", background="offline")
        .say("remind me in 3 seconds to stretch", at=0.4)
        .mark("due", after="tool_called", delay_ms=3000)
        .mark("late", after="tool_called", delay_ms=4000)
        .say("what is 6 times 7?", at=7.0)
        .say("what is the capital of Italy?", at=12.2)
        .expect_says("reminder: stretch", start="mark:due", end="mark:late")
        .expect_says("that makes 42")
        .expect_says("capital of Italy is Rome")
        .expect_tool_called("calculate")
    )


async def test_a_builtin_world_runs_the_real_tools_and_the_offline_planner(autojump_clock) -> None:
    result = await run(live_world_scenario().build())
    assert result.ok, [(o.name, o.observed) for o in result.failures]
    names = [type(a).__name__ for a in build_actors(scenario=result.recording.header.params["scenario"])]
    assert names[-2:] == ["BackgroundActor", "ToolRunner"]
    timers = [c for c in result.observed.tool_calls if c.name == "set_timer"]
    assert timers and timers[0].args == {"seconds": 3.0, "message": "Reminder: stretch."}
    planner = [b for b in result.observed.background if b.status == "progress"]
    assert planner and planner[0].text == "checking the knowledge base…"


async def test_a_builtin_world_recording_replays_bit_for_bit(autojump_clock, tmp_path: Path) -> None:
    record = tmp_path / "live.mtrec"
    await run(live_world_scenario().build(), record=record)
    assert read_recording(record).header.params["scenario"]["world"] == {"tools": "builtin", "background": "offline"}
    replayed = await replay(record)
    assert replayed.ok, replayed.divergence


def test_the_default_world_is_the_scripted_doubles() -> None:
    names = [type(a).__name__ for a in build_actors(scenario=fmt.encode_scenario(text_scenario().build()))]
    assert names[-2:] == ["ScriptedBackground", "ScriptedToolRunner"]
    tools_only = text_scenario().world(tools="builtin").build()
    names = [type(a).__name__ for a in build_actors(scenario=fmt.encode_scenario(tools_only))]
    assert names[-2:] == ["ScriptedBackground", "ToolRunner"]


def test_a_failing_expectation_is_named_with_what_was_observed(tmp_path: Path, capsys) -> None:
    path = tmp_path / "slow.toml"
    path.write_text(
        'name = "slow"\ncategory = "demo"\nduration = 5\n[[timeline]]\nkind = "say"\nat = 0.4\ntext = "hello there"\n'
        '[[expect]]\nkind = "says"\npattern = "zebra"\nname = "mentions zebras"\n'
    )
    assert cli_main(["run", str(path)]) == 1
    out = capsys.readouterr().out
    assert "  FAIL  mentions zebras: no assistant utterance matched /zebra/; heard: " in out
    last = out.rstrip().splitlines()[-1]
    assert last.startswith("FAIL slow: 1 of 1 expectations failed: mentions zebras: no assistant utterance matched")


def test_the_cli_prints_a_timeline_metrics_and_expectations(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        'name = "ok"\ncategory = "demo"\nduration = 6\n[[timeline]]\nkind = "say"\nat = 0.4\ntext = "hello there"\n'
        '[[expect]]\nkind = "says"\npattern = "hi|hello"\n'
    )
    assert cli_main(["run", str(path), "--model", "scripted", "--record", str(tmp_path / "ok.mtrec")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("scenario ok (demo): model scripted, 6 s of virtual time")
    assert '   0.400  user       say "hello there" (turn, text)  [at 0.400 s]' in out
    assert "expectations: 1 of 1 held" in out and "\nPASS ok\n" in out
    assert (tmp_path / "ok.mtrec").exists() and "microturn replay" in out


def test_cli_errors_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[timeline]]\nkind = "say"\ntext = "hi"\nat = -1\n')
    assert cli_main(["run", str(bad)]) == 2
    assert f"error: {bad}:4: timeline[0].at = -1: Expected `float` >= 0.0" in capsys.readouterr().err
    assert cli_main(["run", str(bad), str(bad), "--record", "x.mtrec"]) == 2
    assert "--record needs exactly one scenario" in capsys.readouterr().err
    assert cli_main(["run"]) == 2
    assert cli_main(["run", "--suite", str(tmp_path), str(bad)]) == 2
    ok = tmp_path / "ok.toml"
    ok.write_text('[[timeline]]\nkind = "say"\ntext = "hi"\n')
    assert cli_main(["run", str(ok), "--model", "gpt"]) == 2
    assert "unknown model; known: embedded, local, scripted, sglang, sglang-text" in capsys.readouterr().err


def test_a_suite_prints_one_table_per_category_and_progress_on_stderr(tmp_path: Path, capsys) -> None:
    for name, category, pattern in (("a", "one", "."), ("b", "one", "zebra"), ("c", "two", ".")):
        (tmp_path / f"{name}.toml").write_text(
            f'category = "{category}"\nduration = 5\n[[timeline]]\nkind = "say"\nat = 0.4\ntext = "hello there"\n'
            f'[[expect]]\nkind = "says"\npattern = "{pattern}"\n'
        )
    (tmp_path / "broken.toml").write_text("duration = -1\n")
    assert cli_main(["run", "--suite", str(tmp_path)]) == 2  # a scenario could not run
    captured = capsys.readouterr()
    out = captured.out
    assert "one: 1 of 2 passed\n" in out and "two: 1 of 1 passed\n" in out
    assert out.index("one:") < out.index("two:")
    assert f"ERROR {tmp_path / 'broken.toml'}: " in out and "duration = -1" in out
    assert "4 scenarios, 2 passed, 1 failed, 1 could not run" in out
    assert "failed expectations:\n  b: says /zebra/: no assistant utterance matched /zebra/; heard: " in out
    assert "4/4" in captured.err or "[" in captured.err
    (tmp_path / "broken.toml").unlink()
    assert cli_main(["run", "--suite", str(tmp_path)]) == 1
    first = capsys.readouterr().out
    assert cli_main(["run", "--suite", str(tmp_path)]) == 1
    assert capsys.readouterr().out == first


def test_run_suite_returns_results_and_calls_progress(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('[[timeline]]\nkind = "say"\ntext = "hi"\n[[expect]]\nkind = "says"\npattern = "."\n')
    calls = []
    suite = run_suite(tmp_path, model="scripted", progress=lambda done, total, name: calls.append((done, total, name)))
    assert calls == [(0, 1, "a"), (1, 1, "")]
    assert suite.ok and len(suite.results) == 1


def test_stdout_is_the_same_across_processes(tmp_path: Path) -> None:
    path = LIBRARY / "smooth-turn-text.toml"
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-m", "microturn.cli", "run", str(path)],
                              capture_output=True, text=True, env=env, timeout=120, check=False)
        outs.append((proc.returncode, proc.stdout))
    assert outs[0] == outs[1] and outs[0][1]



@pytest.mark.skipif(not _espeak(), reason="espeak-ng is not installed")
def test_wav_and_report_outputs(tmp_path: Path) -> None:
    from microturn.audio import read_wav

    wav, report = tmp_path / "s.wav", tmp_path / "s.html"
    try:
        import microturn.scenarios.report  # noqa: F401 - built in parallel; the test covers it when present
    except ImportError:
        report = None
    result = run_scenario(LIBRARY / "barge-in-early.toml", model="scripted", wav=wav, report=report)
    audio = read_wav(wav)
    assert audio.channels == 2 and audio.sample_rate == 16000 and audio.seconds > 5
    assert any(m.pcm for m in result.messages if isinstance(m, Playout))  # the assistant was voiced
    if report is not None:
        assert report.read_text().lstrip().lower().startswith("<!doctype html")
