"""Recordings are data and survive damage: replay runs no code a file names, one flipped byte costs one frame,
a cut tail is reported, ``replay``/``show`` exit non-zero on damage, and every bad header field is named."""

import functools
import importlib
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.demo import DEMO_LINES, build
from microturn.messages import OutputChunk, SessionEnded, Stamp, UserText
from microturn.runtime import (
    FORMAT_VERSION,
    KNOWN_FACTORIES,
    RecordingError,
    RecordingVersionError,
    open_session,
    read_recording,
    register_factory,
    replay,
    resolve_factory,
    run_lockstep,
)
from microturn.runtime._recording import MAGIC, MARK, MAX_HEADER_BYTES, _frame

HERE = Path(__file__).parent
HEADER = {"version": FORMAT_VERSION, "session_id": "s", "mode": "lockstep", "tick_period": 0.2, "actors": ["a"]}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    # this directory goes on the path so --factory can name a factory defined in this module
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "microturn.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd, check=False)


async def _record(path, factory="microturn.demo:build", params=None, ticks=25):
    async with open_session(build(), record=path, factory=factory, params=params, session_id="demo") as session:
        for at, text in DEMO_LINES:
            session.schedule(UserText(text=text), at)
        await session.run_ticks(ticks)


def record(path, factory="microturn.demo:build", params=None) -> bytes:
    """Record the echo demo (25 ticks) to ``path`` and return its bytes."""
    run_lockstep(_record, path, factory, params)
    return Path(path).read_bytes()


@functools.cache
def demo_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return record(Path(tmp) / "demo.mtrec")


@functools.cache
def demo_messages() -> list:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo.mtrec"
        path.write_bytes(demo_bytes())
        return read_recording(path).messages


def header_end(data: bytes) -> int:
    """Where the first message frame starts."""
    length = int.from_bytes(data[len(MAGIC) + 4 : len(MAGIC) + 8], "little")
    return len(MAGIC) + 12 + length


def build_changed():
    """The demo with an interaction actor that answers in capitals from tick 10 on (a changed actor)."""
    from microturn.demo import EchoModel

    class Changed(EchoModel):
        async def publish(self, message):
            if isinstance(message, OutputChunk) and message.tick >= 10 and message.text:
                message = msgspec.structs.replace(message, text=message.text.upper())
            return await super().publish(message)

    actors = build()
    actors[3] = Changed(name="interaction")
    return actors


# -- the recording names the code: it must not run ------------------------------------------------------------


def test_a_recording_naming_subprocess_run_runs_nothing_on_replay(tmp_path):
    pwned = tmp_path / "PWNED"
    path = tmp_path / "evil.mtrec"
    record(path, factory="subprocess:run", params={"args": ["touch", str(pwned)]})
    out = cli("replay", str(path))
    assert out.returncode == 2, out
    assert "unknown actor factory 'subprocess:run'" in out.stderr and "--factory" in out.stderr
    assert "Traceback" not in out.stderr
    assert not pwned.exists()


async def test_replay_refuses_an_unknown_factory_without_importing_it(autojump_clock, tmp_path, monkeypatch):
    path = tmp_path / "evil.mtrec"
    await _record(path, factory="os:system", params={"command": "touch PWNED"})

    def no_import(name, *args, **kwargs):
        raise AssertionError(f"replay imported {name!r}, named by the file")

    monkeypatch.setattr(importlib, "import_module", no_import)
    with pytest.raises(RecordingError, match=r"unknown actor factory 'os:system'.*--factory MODULE:FUNCTION"):
        await replay(path)


def test_with_factory_the_user_chooses_the_code_and_replay_passes(tmp_path):
    path = tmp_path / "foreign.mtrec"
    record(path, factory="somebody.elses:factory", params={})
    refused = cli("replay", str(path))
    assert refused.returncode == 2 and "unknown actor factory 'somebody.elses:factory'" in refused.stderr
    ok = cli("replay", str(path), "--factory", "microturn.demo:build")
    assert ok.returncode == 0 and f"replay OK: {len(demo_messages())} messages identical" in ok.stdout, ok


def test_known_factories_resolve_and_registered_ones_win(monkeypatch):
    assert resolve_factory("microturn.demo:build") is build
    assert "microturn.scenarios.runner:build_actors" in KNOWN_FACTORIES

    def double():
        """Test double: a registered factory."""
        return build()

    monkeypatch.setattr("microturn.runtime._replay._registered", {})
    register_factory("tests.double:factory", double)
    assert resolve_factory("tests.double:factory") is double
    with pytest.raises(RecordingError, match="unknown actor factory"):
        resolve_factory("tests.double:other")


async def test_replay_writes_no_file_a_recording_names_and_wraps_a_factorys_error(autojump_clock, tmp_path,
                                                                                    monkeypatch):
    seen = {}

    def capture(**params):
        """Test double: records the params replay passes, then builds the demo."""
        seen.update(params)
        return build()

    monkeypatch.setattr("microturn.runtime._replay._registered", {})
    register_factory("tests.double:capture", capture)
    path = tmp_path / "wav.mtrec"
    await _record(path, factory="tests.double:capture", params={"wav_path": str(tmp_path / "x.wav")})
    assert (await replay(path)).ok
    assert seen == {"wav_path": None}
    path = tmp_path / "params.mtrec"
    await _record(path, factory="microturn.demo:build", params={"max_ticks": "many", "extra": 1})
    with pytest.raises(RecordingError, match=r"factory 'microturn.demo:build' refused the recorded params"):
        await replay(path)


# -- damage: a flipped byte costs one frame, a cut tail is reported --------------------------------------------


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_one_flipped_byte_loses_exactly_one_frame(tmp_path_factory, data):
    whole = demo_bytes()
    original = demo_messages()
    at = data.draw(st.integers(header_end(whole), len(whole) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    damaged = bytearray(whole)
    damaged[at] ^= 1 << bit
    path = tmp_path_factory.mktemp("flip") / "flip.mtrec"
    path.write_bytes(bytes(damaged))
    rec = read_recording(path)
    assert len(rec.messages) == len(original) - 1
    assert len(rec.damage) == 1 and rec.damage[0].frames == 1 and rec.truncated
    loss = rec.damage[0]
    assert loss.offset <= at < loss.end
    kept = [m.stamp.seq for m in rec.messages]
    lost = sorted({m.stamp.seq for m in original} - set(kept))
    assert len(lost) == 1 and rec.messages == [m for m in original if m.stamp.seq != lost[0]]
    if not loss.tail:
        assert (loss.after_seq or 0, loss.resume_seq, loss.lost_messages) == (lost[0] - 1, lost[0] + 1, 1)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.data())
def test_a_cut_tail_keeps_the_prefix_and_says_the_tail_was_lost(tmp_path_factory, data):
    whole = demo_bytes()
    original = demo_messages()
    cut = data.draw(st.integers(header_end(whole), len(whole) - 1), label="cut")
    path = tmp_path_factory.mktemp("cut") / "cut.mtrec"
    path.write_bytes(whole[:cut])
    rec = read_recording(path)
    assert rec.messages == original[: len(rec.messages)] and len(rec.messages) < len(original)
    assert rec.tail_cut_only and rec.damage[0].tail and "cut off" in str(rec.damage[0])
    assert rec.damage[0].end == cut and rec.lost_bytes == cut - rec.damage[0].offset


def test_an_undamaged_recording_reports_no_damage_and_is_format_2():
    whole = demo_bytes()
    assert whole.startswith(MAGIC + MARK)
    assert whole == demo_bytes.__wrapped__()  # the same session twice: the same bytes


def test_a_format_1_recording_is_still_read(tmp_path):
    import struct
    import zlib

    def frame_v1(payload):
        return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload

    from microturn.messages import encode

    msgs = demo_messages()
    header = msgspec.msgpack.encode({**HEADER, "version": 1})
    path = tmp_path / "v1.mtrec"
    body = MAGIC + frame_v1(header) + b"".join(frame_v1(encode(m)) for m in msgs)
    path.write_bytes(body)
    rec = read_recording(path)
    assert rec.messages == msgs and not rec.damage and rec.header.version == 1
    path.write_bytes(body[:-5])
    rec = read_recording(path)
    assert rec.messages == msgs[:-1] and rec.tail_cut_only


# -- exit statuses -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The demo recording whole, with one flipped byte mid-file, with its tail cut, and with both."""
    root = tmp_path_factory.mktemp("exit")
    whole = demo_bytes()
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0x20
    out = {"whole": whole, "flipped": bytes(flipped), "cut": whole[:-30], "both": bytes(flipped[:-30])}
    paths = {}
    for name, blob in out.items():
        paths[name] = root / f"{name}.mtrec"
        paths[name].write_bytes(blob)
    return paths


def test_replay_exit_statuses(files):
    n = len(demo_messages())
    whole = cli("replay", str(files["whole"]))
    assert whole.returncode == 0 and f"replay OK: {n} messages identical" in whole.stdout
    flipped = cli("replay", str(files["flipped"]))
    assert flipped.returncode == 3 and re.search(r"damaged: 1 frame, \d+ bytes lost at bytes \d+\.\.\d+", flipped.stderr)
    assert f"replay INCOMPLETE: {n - 1} messages identical" in flipped.stdout and "1 message(s) not compared" in flipped.stdout
    cut = cli("replay", str(files["cut"]))
    assert cut.returncode == 3
    assert f"{n - 1} messages identical; the tail was lost" in cut.stdout and "--allow-truncated" in cut.stdout
    assert "the tail was cut off" in cut.stderr
    allowed = cli("replay", "--allow-truncated", str(files["cut"]))
    assert allowed.returncode == 0 and "the tail was lost" in allowed.stdout
    both = cli("replay", "--allow-truncated", str(files["both"]))
    assert both.returncode == 3 and f"replay INCOMPLETE: {n - 2} messages identical" in both.stdout
    assert re.search(r"2 frame\(s\) and \d+ bytes lost in 2 place\(s\)", both.stdout)
    changed = cli("replay", "--allow-truncated", str(files["cut"]), "--factory", "test_recordings:build_changed")
    assert changed.returncode == 1 and "diverged at tick 10" in changed.stdout


def test_a_lost_input_makes_replay_diverge_and_says_why(tmp_path):
    from microturn.messages import encode

    whole = demo_bytes()
    first_input = next(m for m in demo_messages() if isinstance(m, UserText))
    at = whole.find(encode(first_input))
    assert at > 0
    damaged = bytearray(whole)
    damaged[at + 3] ^= 0x01
    path = tmp_path / "lost_input.mtrec"
    path.write_bytes(bytes(damaged))
    out = cli("replay", "--allow-truncated", str(path))
    assert out.returncode == 1 and "replay FAILED" in out.stdout and "a lost input" in out.stdout
    assert f"seq {first_input.stamp.seq}..{first_input.stamp.seq}" in out.stderr


def test_show_exit_statuses(files):
    assert cli("show", str(files["whole"])).returncode == 0
    for name in ("flipped", "cut", "both"):
        out = cli("show", str(files[name]))
        assert out.returncode == 3, name
        assert "the recording is damaged" in out.stderr and "message(s) shown" in out.stderr
        assert "bytes lost" in out.stderr and "Traceback" not in out.stderr
    limited = cli("show", "--limit", "3", str(files["flipped"]))
    assert limited.returncode == 3 and "3 message(s) shown" in limited.stderr


# -- every malformed header field is a clear error naming it -------------------------------------------------------

BAD_HEADERS = [
    ({"version": "2"}, "'version'", "'2'"),
    ({"version": 0}, "'version'", "0"),
    ({"version": True}, "'version'", "True"),
    ({"version": 1}, "'version'", "frame layout"),
    ({"session_id": 5}, "'session_id'", "5"),
    ({"session_id": "x" * 100_000}, "'session_id'", "100000 characters"),
    ({"mode": "turbo"}, "'mode'", "'turbo'"),
    ({"mode": None}, "'mode'", "None"),
    ({"tick_period": 0}, "'tick_period'", "(value 0)"),
    ({"tick_period": -0.2}, "'tick_period'", "-0.2"),
    ({"tick_period": math.nan}, "'tick_period'", "nan"),
    ({"tick_period": math.inf}, "'tick_period'", "inf"),
    ({"tick_period": 1e9}, "'tick_period'", "1000000000.0"),
    ({"tick_period": "0.2"}, "'tick_period'", "'0.2'"),
    ({"tick_period": False}, "'tick_period'", "False"),
    ({"actors": "clock"}, "'actors'", "'clock'"),
    ({"actors": ["clock", 7]}, "'actors[1]'", "7"),
    ({"actors": ["a"] * 5000}, "'actors'", "5000 actors"),
    ({"factory": 12}, "'factory'", "12"),
    ({"factory": "m:" + "f" * 1000}, "'factory'", "characters"),
    ({"params": [1]}, "'params'", "[1]"),
    ({"params": {1: 2}}, "'params'", "1"),
    ({"meta": "m"}, "'meta'", "'m'"),
]


@pytest.mark.parametrize(("change", "field", "shown"), BAD_HEADERS)
def test_each_malformed_header_field_is_named_with_its_value(tmp_path, change, field, shown):
    path = tmp_path / "bad.mtrec"
    path.write_bytes(MAGIC + _frame(msgspec.msgpack.encode({**HEADER, **change})))
    with pytest.raises(RecordingError) as info:
        read_recording(path)
    assert field in str(info.value) and shown in str(info.value)


@pytest.mark.parametrize("field", ["session_id", "mode", "tick_period", "actors"])
def test_a_missing_header_field_is_named(tmp_path, field):
    path = tmp_path / "bad.mtrec"
    path.write_bytes(MAGIC + _frame(msgspec.msgpack.encode({k: v for k, v in HEADER.items() if k != field})))
    with pytest.raises(RecordingError, match=f"header field '{field}' is missing"):
        read_recording(path)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\xc1\xc1\xc1", "header is not msgpack"),
        (b"\x91" * 50_000 + b"\x00", "header is not msgpack"),  # nested 50 000 deep
        (msgspec.msgpack.encode([1, 2]), "header must be a map"),
        (msgspec.msgpack.encode({**HEADER, "meta": {"pad": "x" * MAX_HEADER_BYTES}}), "more than the limit"),
        (msgspec.msgpack.encode({**HEADER, "version": 99}), "version 99"),
    ],
)
def test_a_header_that_is_not_a_header_is_a_clear_error(tmp_path, payload, expected):
    path = tmp_path / "bad.mtrec"
    path.write_bytes(MAGIC + _frame(payload))
    with pytest.raises(RecordingError, match=expected) as info:
        read_recording(path)
    assert isinstance(info.value, RecordingVersionError) == (expected == "version 99")


def test_a_bad_header_on_the_command_line_is_an_error_not_a_traceback(tmp_path):
    path = tmp_path / "bad.mtrec"
    for header in (b"not msgpack \xc1", msgspec.msgpack.encode({**HEADER, "tick_period": 0})):
        path.write_bytes(MAGIC + _frame(header))
        for command in ("replay", "show"):
            out = cli(command, str(path))
            assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr


def test_a_session_never_writes_a_header_its_reader_refuses(tmp_path):
    with pytest.raises(RecordingError, match="'session_id'"):
        run_lockstep(_long_id, tmp_path / "long.mtrec")
    assert not (tmp_path / "long.mtrec").exists()


async def _long_id(path):
    async with open_session(build(), record=path, session_id="s" * 1000) as session:
        await session.run_ticks(1)


def test_a_recording_that_ended_normally_ends_with_session_ended():
    assert isinstance(demo_messages()[-1], SessionEnded)


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        (None, "UserText without a stamp"),
        (Stamp(tick=0, seq=1, source="x", time=0.5), "seq 1 after seq 1: out of order"),
        (Stamp(tick=-1, seq=9, source="x", time=0.5), "tick -1 out of range"),
        (Stamp(tick=0, seq=9, source="x", time=math.nan), "session time nan out of range"),
        (Stamp(tick=0, seq=9, source="x", time=-1.0), "session time -1.0 out of range"),
    ],
)
def test_a_frame_with_a_valid_crc_but_an_impossible_stamp_is_one_lost_frame(tmp_path, stamp, reason):
    from microturn.messages import encode

    good = [UserText(text=str(i), stamp=Stamp(tick=0, seq=i, source="x", time=0.1 * i)) for i in (1, 2)]
    ended = SessionEnded(reason="finished", ticks=0, stamp=Stamp(tick=0, seq=4, source="session", time=1.0))
    frames = [encode(good[0]), encode(UserText(text="bad", stamp=stamp)), encode(good[1]), encode(ended)]
    path = tmp_path / "stamps.mtrec"
    path.write_bytes(MAGIC + _frame(msgspec.msgpack.encode(HEADER)) + b"".join(_frame(f) for f in frames))
    rec = read_recording(path)
    assert [m.stamp.seq for m in rec.messages] == [1, 2, 4]
    assert len(rec.damage) == 1 and reason in rec.damage[0].reason and rec.damage[0].frames == 1
    assert (rec.damage[0].after_seq, rec.damage[0].resume_seq) == (1, 2)
