"""Shared set-up for the serve tests: a tiny untrained model, a server with a clock the tests advance, and a
step hook that holds a turn in flight until the test lets it go (no wall-clock sleeps anywhere)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))

from microturn.model.config import tiny
from microturn.serve import ModelServer, open_server

try:
    import torch  # noqa: F401
except ImportError:  # the client tests need no torch; the fixtures below skip without it
    HAVE_TORCH = False
else:
    HAVE_TORCH = True


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    if not HAVE_TORCH:
        yield
        return
    from model_streams import one_thread

    yield from one_thread()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Gate:
    """A step hook: the first decoded token of a turn of ``session`` (once armed) signals ``entered`` and waits for
    ``release`` — so a test can act while that turn is certainly in flight."""

    def __init__(self) -> None:
        self.session: str | None = None
        self.entered = threading.Event()
        self.release = threading.Event()

    def arm(self, session: str) -> None:
        self.session = session
        self.entered.clear()
        self.release.clear()

    def __call__(self, session: str, index: int) -> None:
        if session == self.session and index == 0:
            self.session = None
            self.entered.set()
            self.release.wait(60)


@pytest.fixture(scope="session")
def tiny_backend():
    pytest.importorskip("torch")
    from microturn.model.local import LocalBackend

    return LocalBackend.random(tiny(), seed=0)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def gate():
    g = Gate()
    yield g
    g.release.set()


@pytest.fixture
def server(tiny_backend, clock, gate):
    return ModelServer(tiny_backend.model, clock=clock, step_hook=gate, reap_interval=3600)


@pytest.fixture
async def url(server):
    async with open_server(server, port=0) as base:
        yield base
