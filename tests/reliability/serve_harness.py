"""A real ``microturn serve`` process for fault injection, and raw-socket helpers to hang up at any byte."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m microturn.cli serve --untrained tiny`` (or ``model``'s flags; ``()``: the shipped checkpoint) as
    its own process, with ``flags``; ``log`` is its JSON log (one event a line)."""

    def __init__(self, log: Path, *flags: str, port: int = 0, model: tuple[str, ...] = ("--untrained", "tiny")) -> None:
        pytest.importorskip("torch")  # the server's model
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "microturn.cli", "--log-level", "info", "--log-json", str(log), "serve",
             "--port", str(port), *model, "--threads", "1", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise AssertionError(f"microturn serve did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        self.url = line.split()[-1]
        parts = urlsplit(self.url)
        self.address = (parts.hostname, parts.port)

    def alive(self) -> bool:
        """The process is still running."""
        return self.proc.poll() is None

    def rss_bytes(self) -> int:
        """Its resident memory now."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def events(self, name: str) -> list[dict]:
        """Its log events called ``name``."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                out.append(event)
        return out

    def stop(self) -> int:
        """Ctrl-C it and wait; its exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def native_body(sid: str | None, enc, *, k: int = 8, stream: bool = False, **sampling) -> dict:
    """A /generate body for one encoded tick."""
    body: dict = {"input_ids": enc.tokens, "stream": stream,
                  "sampling_params": {"max_new_tokens": k, "temperature": 0, **sampling}}
    if sid is not None:
        body["session_params"] = {"id": sid}
    if enc.dmel or enc.patches:
        body["media"] = {"dmel": base64.b64encode(b"".join(enc.dmel)).decode(),
                         "patches": base64.b64encode(b"".join(enc.patches)).decode()}
    return body


def http_request(address, path: str, body: bytes, *, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one HTTP/1.1 POST (Connection: close)."""
    head = {"Host": f"{address[0]}:{address[1]}", "Content-Type": "application/json",
            "Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    return "\r\n".join(lines).encode() + body


def read_until(sock: socket.socket, marker: bytes, count: int = 1, limit: int = 1 << 20) -> bytes:
    """Read until ``marker`` has been seen ``count`` times (or the peer closes)."""
    data = b""
    while data.count(marker) < count and len(data) < limit:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    return data


def hang_up(sock: socket.socket) -> None:
    """Close at once, with a reset (no graceful FIN handshake): the rudest way to leave."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
