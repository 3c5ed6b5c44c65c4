"""Shared parts of the reliability tests.

- Loopback servers for client-side tests (http_get, the OpenAI reasoner): real sockets, served by hypercorn on
  trio with small starlette apps; each lives for the body of one ``async with`` (see :func:`serving`).
- Fault injection against a REAL ``microturn serve`` process: a tiny untrained model on a free loopback port,
  its structured log in a file, its memory read from /proc. Raw sockets let a test hang up at any byte.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "model"))

from serve_harness import ServerProcess


@asynccontextmanager
async def serving(app: Any, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve ``app`` on a free port of ``host`` (``::1`` for IPv6) for the body; yields the base URL."""
    config = Config()
    config.bind = [f"[{host}]:0" if ":" in host else f"{host}:0"]
    config.graceful_timeout = 0.2  # a handler that never finishes must not hold up the end of the test
    config.accesslog = None
    config.errorlog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config, shutdown_trigger=stop.wait))
        try:
            yield binds[0]
        finally:
            stop.set()


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
