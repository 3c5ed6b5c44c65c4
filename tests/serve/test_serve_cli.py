"""``microturn serve``, ``microturn sglang-up`` and ``microturn chat --url`` as commands (subprocesses)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from microturn.cli import main
from microturn.serve import ModelServer, serve_in_thread
from microturn.serve_cli import SglangUnavailable, check_sglang, launch_and_wait, sglang_command

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sglang_up_without_sglang_fails_at_once_saying_so(capsys, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "sglang" else object())
    assert main(["sglang-up", "Qwen/Qwen2.5-0.5B-Instruct"]) == 2
    err = capsys.readouterr().err
    assert "sglang is not installed" in err and "microturn[sglang]" in err


def test_sglang_up_without_a_gpu_fails_at_once_saying_so():
    with pytest.raises(SglangUnavailable, match="no GPU: nvidia-smi is not on PATH and torch sees no CUDA"):
        check_sglang(find_spec=lambda name: object(), which=lambda name: None, cuda_available=lambda: False)
    check_sglang(find_spec=lambda name: object(), which=lambda name: "/usr/bin/nvidia-smi")  # all there


def test_the_sglang_command_asks_for_streaming_sessions():
    cmd = sglang_command("some/model", port=31000, extra=["--", "--tp", "2"])
    assert cmd[:3] == [sys.executable, "-m", "sglang.launch_server"]
    assert cmd[cmd.index("--model-path") + 1] == "some/model" and cmd[cmd.index("--port") + 1] == "31000"
    assert "--enable-streaming-session" in cmd and cmd[-2:] == ["--tp", "2"]


def test_launch_waits_for_health_and_stops_the_server_cleanly():
    """``microturn serve`` stands in for sglang: the launcher waits for /health, then stops it."""
    port = _free_port()
    command = [sys.executable, "-m", "microturn.cli", "serve", "--port", str(port), "--untrained", "tiny"]
    seen: list[int] = []
    ready = threading.Event()

    def on_ready(url):
        seen.append(httpx.get(url + "/health").status_code)
        ready.set()

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT)
    try:
        assert launch_and_wait(command, f"http://127.0.0.1:{port}", timeout=120, poll=0.05, until=ready.is_set,
                               on_ready=on_ready) == 0
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    assert seen == [200]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")  # stopped
    with pytest.raises(SglangUnavailable, match="exited with status 3"):
        launch_and_wait([sys.executable, "-c", "raise SystemExit(3)"], "http://127.0.0.1:9", poll=0.05)


def test_microturn_serve_prints_its_url_serves_and_stops_on_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-m", "microturn.cli", "serve", "--port", "0", "--untrained", "tiny"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert line.startswith("microturn serve: listening on http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[-1]
        health = httpx.get(url + "/health").json()
        assert health["status"] == "ok" and health["sessions"] == 0
        sid = httpx.post(url + "/open_session", json={"capacity_of_str_len": 10, "streaming": True}).json()
        r = httpx.post(url + "/generate", json={"text": "hi", "session_params": {"id": sid},
                                                "sampling_params": {"max_new_tokens": 2}})
        assert r.status_code == 200 and r.json()["meta_info"]["completion_tokens"] >= 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert "UNTRAINED" in proc.stderr.read()  # no checkpoint: the fallback says so
    finally:
        if proc.poll() is None:
            proc.kill()


def test_microturn_serve_names_a_bad_checkpoint(tmp_path):
    out = subprocess.run([sys.executable, "-m", "microturn.cli", "serve", "--port", "0", "--checkpoint",
                          str(tmp_path / "missing.pt")], check=False, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "missing.pt" in out.stderr


def test_chat_talks_to_a_server_with_url(tiny_backend):
    """A chat session (stdin is a pipe: read line by line) steps the model in the server until the user quits."""
    stepped = threading.Event()
    server = ModelServer(tiny_backend.model, step_hook=lambda sid, index: stepped.set())
    with serve_in_thread(server) as url:
        proc = subprocess.Popen([sys.executable, "-m", "microturn.cli", "chat", "--url", url], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
        try:
            proc.stdin.write("hello there\n")
            proc.stdin.flush()
            assert stepped.wait(120), proc.stderr.read() if proc.poll() is not None else "no step"
            out, err = proc.communicate("/quit\n", timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert "you: hello there" in out
        assert server.requests > 0 and server.stats()["sessions"] == 0  # opened, stepped, closed


NO_TORCH = """
import sys
sys.modules["torch"] = None  # as without the torch extra
from microturn.model.sglang import SglangBackend, open_sglang_backend, TextBridge
import microturn.serve, microturn.serve_cli
from microturn.cli import main
SglangBackend("http://127.0.0.1:1", mode="text")
sys.exit(main(["serve", "--port", "0"]))
"""


def test_the_client_needs_no_torch_and_serve_says_what_it_needs():
    out = subprocess.run([sys.executable, "-c", NO_TORCH], check=False, capture_output=True, text=True, env=ENV,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "microturn serve needs the 'torch' extra: pip install 'microturn[torch]'" in out.stderr


def test_microturn_serve_on_a_port_in_use_says_so():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "microturn.cli", "serve", "--port", str(port), "--untrained", "tiny"],
                             check=False, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "Address already in use" in out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_microturn_serve_names_a_missing_checkpoint():
    out = subprocess.run([sys.executable, "-m", "microturn.cli", "serve", "--checkpoint", "/nonexistent/model"],
                         check=False, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert "--checkpoint /nonexistent/model: no checkpoint at /nonexistent/model" in out.stderr
    assert "Traceback" not in out.stderr
