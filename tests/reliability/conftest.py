"""Shared parts of the reliability tests.

- Loopback servers for client-side tests (http_get, the OpenAI reasoner): real sockets, served by hypercorn on
  trio with small starlette apps; each lives for the body of one ``async with`` (see :func:`serving`).
- Fault injection against a REAL ``microturn serve`` process: a tiny untrained model on a free loopback port,
  its structured log in a file, its memory read from /proc. Raw sockets let a test hang up at any byte.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "model"))  # model_streams, for the server tests' inputs
sys.path.insert(0, str(ROOT / "tests"))  # the shared loopback server

from loopback import serving
from serve_harness import ServerProcess


@pytest.fixture
def serve() -> Any:
    """:func:`serving`, for test modules (conftest modules are not imported by name)."""
    return serving


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for a module's tests: small caps so the limits are reachable quickly."""
    log = tmp_path_factory.mktemp("serve") / "serve.jsonl"
    server = ServerProcess(log, "--max-body-bytes", "262144", "--max-sessions", "48")
    yield server
    assert server.alive(), "the server exited during the tests"
    assert server.stop() == 0
    assert server.events("serve_internal_error") == []
