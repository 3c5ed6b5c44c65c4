"""Trigger semantics: absolute and relative event times, occurrences, chains, the marks user events leave, and
what each event kind sends. Sessions run in lockstep under pytest-trio's autojump clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from msgspec.structs import replace

from microturn.actors import ClockActor, PerceptionActor
from microturn.audio import espeak_available, write_wav
from microturn.messages import (
    BackgroundUpdate,
    DialogState,
    InputChunk,
    Mark,
    Message,
    OutputChunk,
    SpeechEnded,
    SpeechStarted,
    Stamp,
    Tick,
    ToolCall,
    UserAudio,
    UserImage,
    UserText,
)
from microturn.runtime import Actor, open_session
from microturn.scenarios.builder import ScenarioBuilder
from microturn.scenarios.triggers import (
    EPSILON,
    Director,
    Occurrences,
    check_reference,
    parse_reference,
    prepare_plans,
    snap,
)


class Script(Actor):
    """Plays the assistant's side: publishes the given messages at the end of the given ticks."""

    subscriptions = (Tick,)

    def __init__(self, plan: dict[int, list[Message]]) -> None:
        super().__init__("assistant")
        self.plan = plan

    async def handle(self, message: object) -> None:
        if isinstance(message, Tick):
            for m in self.plan.get(message.tick, []):
                await self.publish(m)


def speech(uid: int, backchannel: bool = False) -> list[Message]:
    """What the interaction actor publishes when an utterance starts."""
    controls = ["backchannel"] if backchannel else ["speak"]
    return [SpeechStarted(utterance_id=uid, generation=uid), OutputChunk(tick=0, generation=uid, text="x",
                                                                            controls=controls)]


async def run_director(scenario, plan: dict[int, list[Message]] | None = None, *, seconds: float = 6.0,
                       perception: bool = False):
    director = Director(scenario, prepare_plans(scenario))
    seen: list[Message] = []
    actors = [ClockActor(), Script(plan or {})] + ([PerceptionActor()] if perception else [])
    async with open_session(actors, taps=[seen.append, director.observe]) as session:
        director.attach(session)
        await session.run_for(seconds)
    return director, seen


def scenario_inputs(seen: list[Message]) -> list[tuple[float, str]]:
    """(time, what) of every message the scenario published."""
    out = []
    for m in seen:
        if m.stamp.source != "scenario":
            continue
        if isinstance(m, Mark):
            out.append((m.stamp.time, m.name))
        elif isinstance(m, UserText):
            out.append((m.stamp.time, f"text{m.text!r}"))
        else:
            out.append((m.stamp.time, type(m).__name__))
    return out


# --- references -----------------------------------------------------------------------------------------------


def test_references_parse_with_occurrences_and_event_edges() -> None:
    assert parse_reference("user:turn_end") == ("user:turn_end", 1, None, "end")
    assert parse_reference("assistant_starts_speaking#3") == ("assistant_starts_speaking", 3, None, "end")
    assert parse_reference("dialog:yielding", nth=2).nth == 2
    assert parse_reference("event:hello") == ("event:hello", 1, "hello", "end")
    assert parse_reference("event:hello:start") == ("event:hello:start", 1, "hello", "start")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("start", None),
        ("start#2", "starts once"),
        ("assistant_stops_speaking#2", None),
        ("background_result", None),
        ("dialog:inviting", None),
        ("dialog:asleep", "unknown dialog state"),
        ("user:pause_end", None),
        ("user:cough", "unknown user event mark"),
        ("mark:here", None),
        ("mark:there", "no timeline 'mark' event"),
        ("event:a", None),
        ("event:a:start", None),
        ("event:b", "no timeline event has id 'b'"),
        ("event:a#2", "happens once"),
        ("turn_end", "unknown reference"),
        ("user:turn_end#x", "occurrence number"),
    ],
)
def test_check_reference(text: str, problem: str | None) -> None:
    found = check_reference(text, event_ids={"a": 0}, marks={"mark:here"})
    assert found is None if problem is None else problem in found


def test_times_on_a_tick_boundary_snap_to_the_clocks_own_float() -> None:
    assert 1.2 + 0.2 != 0.2 * 7  # the reason snapping exists
    assert snap(1.2 + 0.2) == 0.2 * 7
    assert snap(9.0 + 0.2) == 0.2 * 46
    assert snap(1.25) == 1.25
    assert snap(1.4 + 2 * EPSILON) == 1.4 + 2 * EPSILON  # a deliberate microsecond is kept


def stamped(message: Message, t: float, seq: int) -> Message:
    return replace(message, stamp=Stamp(tick=int(t / 0.2), seq=seq, source="x", time=t))


def test_occurrences_classify_messages() -> None:
    occ = Occurrences()
    feed = [
        (DialogState(floor="none", user="yielding", assistant="silent"), 0.2),
        (DialogState(floor="none", user="yielding", assistant="speaking"), 0.4),  # no user change: no occurrence
        (SpeechStarted(utterance_id=1, generation=1), 0.6),
        (OutputChunk(tick=3, generation=1, text="mm-hm", controls=["backchannel"]), 0.6),
        (SpeechEnded(utterance_id=1, generation=1, reason="completed"), 1.0),
        (SpeechStarted(utterance_id=2, generation=2), 1.2),
        (OutputChunk(tick=6, generation=2, text="Hi", controls=["speak"]), 1.2),
        (ToolCall(call_id="t-1", name="t"), 1.2),
        (BackgroundUpdate(task_id="k", status="progress", text="..."), 1.3),
        (BackgroundUpdate(task_id="k", status="final", text="done"), 1.4),
        (SpeechEnded(utterance_id=2, generation=2, reason="interrupted"), 1.6),
        (Mark(name="user:barge_in"), 1.5),
    ]
    found = [occ.feed(stamped(m, t, i)) for i, (m, t) in enumerate(feed)]
    assert [f for group in found for f in group] == [
        ("dialog:yielding", 0.2),
        ("assistant_backchannels", 0.6),
        ("assistant_starts_speaking", 1.2),
        ("tool_called", 1.2),
        ("background_result", 1.4),
        ("assistant_stops_speaking", 1.6),
        ("user:barge_in", 1.5),
    ]
    assert occ.time_of("start") == 0.0 and occ.time_of("assistant_starts_speaking", 2) is None


# --- firing the timeline --------------------------------------------------------------------------------------


async def test_absolute_events_land_at_their_times_and_sequential_ones_follow(autojump_clock) -> None:
    scenario = (
        ScenarioBuilder("t", duration=6)
        .say("one two", at=0.5, id="a")  # text at 300 wpm: one word per 200 ms
        .pause(1.0)  # follows the previous event's end: 0.9
        .say("three", role="partial")  # follows the pause: 1.9
        .mark("m", at=3.0)
        .build()
    )
    director, seen = await run_director(scenario)
    assert scenario_inputs(seen) == [
        (0.5, "text'one'"),
        (0.7, "text' two'"),
        (0.9, "user:turn_end"),
        (0.9, "user:pause"),
        (1.9, "user:pause_end"),
        (1.9, "text'three'"),
        (pytest.approx(3.0), "mark:m"),
    ]
    assert [(f.index, round(f.start, 6), round(f.end, 6)) for f in director.fired.values()] == [
        (0, 0.5, 0.9), (1, 0.9, 1.9), (2, 1.9, 2.1), (3, 3.0, 3.0)
    ]
    assert director.not_fired() == []


async def test_an_input_on_a_tick_boundary_belongs_to_the_window_it_opens(autojump_clock) -> None:
    scenario = ScenarioBuilder("t", duration=3).say("a b c", at=1.0, wpm=300).build()  # 1.0, 1.2, 1.4
    _, seen = await run_director(scenario, perception=True, seconds=3)
    texts = {m.tick: m.text for m in seen if isinstance(m, InputChunk) and m.text}
    assert texts == {5: "a", 6: " b", 7: " c"}  # one word per window, even at 1.2 + 0.2


async def test_relative_events_fire_after_the_nth_occurrence_plus_the_delay(autojump_clock) -> None:
    scenario = (
        ScenarioBuilder("t", duration=6)
        .mark("first", after="assistant_starts_speaking", delay_ms=300)
        .mark("second", after="assistant_starts_speaking", nth=2, delay_ticks=2)
        .mark("bc", after="assistant_backchannels")
        .mark("third", after="assistant_starts_speaking#3")  # never happens
        .build()
    )
    plan = {4: speech(1), 9: speech(2, backchannel=True), 14: speech(3)}  # published at 1.0, 2.0 and 3.0 s
    director, seen = await run_director(scenario, plan)
    marks = {name: t for t, name in scenario_inputs(seen)}
    assert marks["mark:first"] == pytest.approx(1.3)
    assert marks["mark:bc"] == pytest.approx(2.0 + EPSILON)  # zero delay: a microsecond after its cause
    assert marks["mark:second"] == pytest.approx(3.4)  # the 2nd non-backchannel start is utterance 3
    assert "mark:third" not in marks
    assert director.not_fired() == [(3, "at assistant_starts_speaking#3")]


async def test_dialog_state_triggers_fire_on_the_change_only(autojump_clock) -> None:
    def state(user: str, assistant: str = "silent") -> DialogState:
        return DialogState(floor="none", user=user, assistant=assistant)  # type: ignore[arg-type]

    scenario = (
        ScenarioBuilder("t", duration=4)
        .mark("y1", after="dialog:yielding")
        .mark("y2", after="dialog:yielding", nth=2)
        .build()
    )
    plan = {2: [state("yielding")], 4: [state("yielding", "speaking")], 6: [state("speaking")], 9: [state("yielding")]}
    _, seen = await run_director(scenario, plan)
    marks = {name: t for t, name in scenario_inputs(seen)}
    assert marks["mark:y1"] == pytest.approx(0.6 + EPSILON)
    assert marks["mark:y2"] == pytest.approx(2.0 + EPSILON)


async def test_event_and_mark_references_chain(autojump_clock) -> None:
    scenario = (
        ScenarioBuilder("t", duration=8)
        .say("hello there", after="assistant_starts_speaking", delay_ms=100, id="a")
        .mark("started", after="event:a:start")
        .mark("ended", after="event:a", delay_ms=200)
        .cough(after="mark:ended", delay_ms=50, id="c")
        .mark("after-cough", after="event:c")
        .build()
    )
    _, seen = await run_director(scenario, {4: speech(1)})
    got = scenario_inputs(seen)
    marks = {name: t for t, name in got}
    assert marks["mark:started"] == pytest.approx(1.1)
    assert marks["user:turn_end"] == pytest.approx(1.5)
    assert marks["mark:ended"] == pytest.approx(1.7)
    assert marks["user:noise"] == pytest.approx(1.75)
    assert marks["mark:after-cough"] == pytest.approx(2.0)
    audio = [t for t, what in got if what == "UserAudio"]
    assert audio == [pytest.approx(1.75), pytest.approx(1.95)]  # 0.25 s of cough in 200 ms pieces


async def test_roles_leave_their_marks(autojump_clock) -> None:
    scenario = (
        ScenarioBuilder("t", duration=6)
        .say("yes", role="backchannel", at=0.4)
        .say("stop now", role="barge_in", at=1.0)
        .say("one more", role="partial", at=2.0)
        .say("done", role="none", at=3.0)
        .noise(at=4.0, role="none")
        .interrupt("wait", at=5.0)
        .build()
    )
    _, seen = await run_director(scenario)
    marks = [(round(t, 6), what) for t, what in scenario_inputs(seen) if what.startswith("user:")]
    assert marks == [(0.4, "user:backchannel"), (1.0, "user:barge_in"), (5.0, "user:barge_in")]


async def test_an_image_and_a_wav_file_are_sent(autojump_clock, tmp_path: Path) -> None:
    write_wav(tmp_path / "tone.wav", np.full(8000, 0.1, np.float32), 8000)  # 1 s at 8 kHz
    scenario = (
        ScenarioBuilder("t", duration=3, base_dir=tmp_path)
        .image(pattern="checker", width=50, height=30, at=0.2)
        .play("tone.wav", transcript="hum", role="noise", at=0.5)
        .build()
    )
    _, seen = await run_director(scenario)
    image = next(m for m in seen if isinstance(m, UserImage))
    assert (image.format, image.width, image.height, len(image.data)) == ("rgb", 50, 30, 50 * 30 * 3)
    pieces = [m for m in seen if isinstance(m, UserAudio)]
    assert [m.stamp.time for m in pieces] == pytest.approx([0.5, 0.7, 0.9, 1.1, 1.3])
    assert all(m.sample_rate == 8000 and len(m.pcm) == 3200 for m in pieces)  # 200 ms at 8 kHz
    transcript = next(m for m in seen if isinstance(m, UserText))
    assert transcript.text == "hum" and transcript.stamp.time == pytest.approx(1.3)


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_speech_mode_sends_200_ms_pieces_and_the_transcript_at_the_end() -> None:
    scenario = ScenarioBuilder("t").speech("speech").say("hello there", at=0.4).build()
    (plan,) = prepare_plans(scenario)
    audio = [(t, m) for t, m in plan.items if isinstance(m, UserAudio)]
    assert [t for t, _ in audio] == pytest.approx([0.2 * i for i in range(len(audio))])
    assert all(len(m.pcm) == 6400 for _, m in audio[:-1]) and 0 < len(audio[-1][1].pcm) <= 6400
    assert plan.duration == pytest.approx(sum(len(m.pcm) for _, m in audio) / 32000)
    text = [(t, m.text) for t, m in plan.items if isinstance(m, UserText)]
    assert text == [(audio[-1][0], "hello there")]
    assert plan.items[-1] == (plan.duration, Mark(name="user:turn_end"))
    # synthesised once, then cached: the same plan again is the same bytes
    (again,) = prepare_plans(scenario)
    assert again.items == plan.items


def test_noise_is_deterministic_and_a_cough_decays() -> None:
    scenario = ScenarioBuilder("t").noise(at=0, seed=3).cough(at=1, seed=3).build()
    noise, cough = prepare_plans(scenario)
    again, _ = prepare_plans(scenario)
    assert noise.items == again.items
    pcm = b"".join(m.pcm for _, m in cough.items if isinstance(m, UserAudio))
    x = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.float64))
    assert x[: x.size // 4].mean() > 4 * x[-x.size // 4 :].mean()
