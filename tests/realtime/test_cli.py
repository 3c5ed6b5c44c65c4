"""``microturn serve --realtime`` as a command: a missing extra is named, a bad model is refused, and the
server it starts speaks the protocol to a real client until SIGINT stops it cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from microturn.cli import main

pytest.importorskip("openai")
websockets = pytest.importorskip("websockets")

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_serve_realtime_without_the_extra_names_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # import openai now fails as if it were not installed
    assert main(["serve", "--realtime"]) == 2
    err = capsys.readouterr().err
    assert "microturn[realtime" in err and "Traceback" not in err


def test_serve_realtime_refuses_an_unknown_model(capsys):
    assert main(["serve", "--realtime", "--port", "0", "--model", "nonsense"]) == 2
    assert "--model nonsense" in capsys.readouterr().err


def test_serve_realtime_serves_until_sigint():
    proc = subprocess.Popen([sys.executable, "-m", "microturn", "serve", "--realtime", "--port", "0", "--model",
                             "scripted"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        line = proc.stdout.readline()  # blocks until listening (or the process ends, giving "")
        assert "listening on ws://" in line, proc.stderr.read() if not line else line
        url = line.rsplit(" ", 1)[1].strip()

        async def first_event() -> dict:
            async with websockets.connect(url + "?model=microturn") as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), 60))

        assert first_event and asyncio.run(first_event())["type"] == "session.created"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
