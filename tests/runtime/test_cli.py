"""The command line: demo, show and replay, run as a user runs them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args):
    # the test directory goes on the path so --factory can name a factory defined in a test module
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.run(
        [sys.executable, "-m", "microturn.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0
    for command in ("demo", "chat", "replay", "show"):
        assert command in out.stdout


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "demo.mtrec"
    out = run("demo", "--pipeline", "echo", "--ticks", "25", "--record", str(path))
    assert out.returncode == 0, out.stderr
    assert "you said:" in out.stdout and "SessionEnded" in out.stdout
    return path


def test_replay_passes_then_fails_on_a_changed_actor(recording):
    ok = run("replay", str(recording))
    assert ok.returncode == 0 and "replay OK" in ok.stdout
    bad = run("replay", str(recording), "--factory", "test_recording_replay:build_changed")
    assert bad.returncode == 1
    assert "diverged at tick 10" in bad.stdout


def test_show_filters_by_actor_and_type(recording):
    out = run("show", str(recording), "--actor", "output_mixer", "--type", "Playout")
    assert out.returncode == 0
    lines = [line for line in out.stdout.splitlines() if "Playout" in line]
    assert lines and all("output_mixer" in line for line in lines)
    assert "Tick" not in out.stdout.split("\n", 2)[2]
    unknown = run("show", str(recording), "--type", "Nope")
    assert unknown.returncode == 2 and "unknown message type" in unknown.stdout


def test_bad_files_give_a_clear_error(tmp_path):
    path = tmp_path / "x.mtrec"
    path.write_text("not a recording")
    out = run("show", str(path))
    assert out.returncode == 2 and "not a microturn recording" in out.stderr


def test_bad_numbers_are_refused_naming_the_option():
    out = run("demo", "--ticks", "-5")
    assert out.returncode == 2 and "--ticks" in out.stderr and "'-5'" in out.stderr
    out = run("chat", "--tick-ms", "0")
    assert out.returncode == 2 and "--tick-ms" in out.stderr
