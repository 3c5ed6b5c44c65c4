"""Recordings and replay: byte-identical lockstep runs, replay, divergence, truncation, bad files."""

import msgspec
import pytest

from microturn.actors import ClockActor
from microturn.demo import DEMO_LINES, build
from microturn.messages import OutputChunk, SessionEnded, Tick, UserText
from microturn.runtime import (
    Actor,
    RecordingError,
    RecordingVersionError,
    open_session,
    read_recording,
    replay,
)
from microturn.runtime._recording import MAGIC, _frame


async def record_demo(path, ticks=25):
    async with open_session(build(), record=path, factory="microturn.demo:build", session_id="demo") as session:
        for at, text in DEMO_LINES:
            session.schedule(UserText(text=text), at)
        await session.run_ticks(ticks)


async def test_the_same_session_twenty_times_gives_byte_identical_recordings(autojump_clock, tmp_path):
    blobs = set()
    for i in range(20):
        path = tmp_path / f"run{i}.mtrec"
        await record_demo(path)
        blobs.add(path.read_bytes())
    assert len(blobs) == 1


async def test_replay_of_a_recording_passes(autojump_clock, tmp_path):
    path = tmp_path / "demo.mtrec"
    await record_demo(path)
    rec = read_recording(path)
    assert not rec.truncated and isinstance(rec.messages[-1], SessionEnded)
    assert [m.text for m in rec.inputs] == [text for _, text in DEMO_LINES]
    result = await replay(path)
    assert result.ok and result.compared == len(rec.messages)


def build_changed():
    """The demo with an interaction actor that answers differently from tick 10 on."""
    from microturn.demo import EchoModel

    class Changed(EchoModel):
        async def publish(self, message):
            if isinstance(message, OutputChunk) and message.tick >= 10 and message.text:
                message = msgspec.structs.replace(message, text=message.text.upper())
            return await super().publish(message)

    actors = build()
    actors[3] = Changed(name="interaction")
    return actors


async def test_a_changed_actor_makes_replay_fail_at_the_right_tick(autojump_clock, tmp_path):
    path = tmp_path / "demo.mtrec"
    await record_demo(path)
    result = await replay(path, factory=build_changed)
    assert not result.ok
    div = result.divergence
    # the first output the changed actor alters is the echo of the second line, said at 1.9 s (window 9),
    # published as the output for tick 10 while window 10 is open
    assert div.tick == 10
    assert "you said:" in div.expected and "YOU SAID:" in div.got
    rec = read_recording(path)
    assert rec.messages[div.index].stamp.seq == div.seq
    assert result.compared == div.index


async def test_a_cut_off_recording_is_detected_and_its_prefix_replays(autojump_clock, tmp_path):
    path = tmp_path / "demo.mtrec"
    await record_demo(path)
    whole = read_recording(path)
    data = path.read_bytes()
    for cut in (len(data) - 3, len(data) // 2, len(data) // 3 + 5):
        cut_path = tmp_path / f"cut{cut}.mtrec"
        cut_path.write_bytes(data[:cut])
        rec = read_recording(cut_path)
        assert rec.truncated and "cut off" in rec.problem
        assert 0 < len(rec.messages) < len(whole.messages)
        assert rec.messages == whole.messages[: len(rec.messages)]
        result = await replay(cut_path)
        assert result.ok and result.truncated and result.compared == len(rec.messages)


async def test_a_corrupt_frame_ends_the_intact_prefix(autojump_clock, tmp_path):
    path = tmp_path / "demo.mtrec"
    await record_demo(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    rec = read_recording(path)
    assert rec.truncated and ("checksum" in rec.problem or "cut off" in rec.problem)


def test_a_file_that_is_not_a_recording_gets_a_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(RecordingError, match="not a microturn recording"):
        read_recording(path)
    with pytest.raises(RecordingError, match="cannot read"):
        read_recording(tmp_path / "missing.mtrec")


def test_a_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "future.mtrec"
    header = {"version": 99, "session_id": "s", "mode": "lockstep", "tick_period": 0.2, "actors": []}
    path.write_bytes(MAGIC + _frame(msgspec.msgpack.encode(header)))
    with pytest.raises(RecordingVersionError, match="version 99"):
        read_recording(path)


async def test_replay_needs_a_factory(autojump_clock, tmp_path):
    path = tmp_path / "anon.mtrec"
    async with open_session(build(), record=path) as session:
        await session.run_ticks(2)
    with pytest.raises(RecordingError, match="factory"):
        await replay(path)
    result = await replay(path, factory=build)
    assert result.ok


class LastInstant(Actor):
    """Test double: every Tick starts owned work that publishes at once (an event due at the same instant)."""

    subscriptions = (Tick,)

    async def handle(self, message):
        async def report():
            await self.publish(UserText(text=f"after tick {message.tick}"))

        self.spawn(report)


async def test_events_due_when_the_session_ends_fire_before_session_ended(autojump_clock, tmp_path):
    blobs = set()
    for i in range(10):
        seen = []
        path = tmp_path / f"end{i}.mtrec"
        async with open_session([ClockActor(), LastInstant()], record=path, taps=[seen.append]) as session:
            await session.run_ticks(3)
        assert [m.text for m in seen if isinstance(m, UserText)][-1] == "after tick 2"
        assert isinstance(seen[-1], SessionEnded)
        blobs.add(path.read_bytes())
    assert len(blobs) == 1
