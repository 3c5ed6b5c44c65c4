"""What needs the server's own clock or a failing model: idle reaping whatever timeout was asked, and every
500 answered with its cause and logged. An in-process server on real loopback HTTP; its clock is a test double
(``FakeClock``) that the test moves, so nothing sleeps."""

from __future__ import annotations

import httpx
import pytest
import structlog
from model_streams import step_inputs
from serve_harness import native_body

from microturn.model.config import tiny
from microturn.model.layout import TickEncoder
from microturn.serve import ModelServer, ServeLimits, open_server


class FakeClock:
    """A test double for the server's monotonic clock: moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def model():
    from microturn.model.local import LocalBackend

    return LocalBackend.random(tiny(), seed=0).model


def chunk(seed: int = 0):
    return TickEncoder(tiny().max_input_tokens).encode(step_inputs(1, seed)[0])


@pytest.mark.parametrize(("asked", "lives"), [(None, 300.0), (5.0, 5.0), (1e6, 3600.0), (3600.0, 3600.0)])
async def test_every_idle_session_is_reaped_whatever_timeout_it_asked(model, asked, lives):
    """No timeout asked: the default (300 s); a huge one: clamped to the maximum (3600 s)."""
    clock = FakeClock()
    server = ModelServer(model, clock=clock, reap_interval=3600, limits=ServeLimits())
    async with open_server(server, port=0) as url, httpx.AsyncClient(base_url=url) as c:
        body = {"streaming": True} if asked is None else {"streaming": True, "timeout": asked}
        sid = (await c.post("/open_session", json=body)).json()
        assert (await c.post("/generate", json=native_body(sid, chunk()))).status_code == 200
        clock.now += lives - 0.01
        assert (await c.get("/health")).json()["sessions"] == 1
        clock.now += 0.02
        health = (await c.get("/health")).json()
        assert health["sessions"] == 0 and health["timed_out"] == 1
        r = await c.post("/generate", json=native_body(sid, chunk(1)))
        assert r.status_code == 400 and "no open session" in r.json()["error"]["message"]


async def test_thousands_of_sessions_never_closed_are_all_reaped(model):
    """The reported leak: sessions opened without a timeout and abandoned. All go once idle long enough."""
    clock = FakeClock()
    server = ModelServer(model, clock=clock, reap_interval=3600, limits=ServeLimits(max_sessions=3000))
    async with open_server(server, port=0) as url, httpx.AsyncClient(base_url=url) as c:
        for _ in range(600):
            assert (await c.post("/open_session", json={"streaming": True})).status_code == 200
        assert (await c.get("/health")).json()["sessions"] == 600
        clock.now += 301
        assert (await c.get("/health")).json()["sessions"] == 0


def failing_hook(session: str, index: int) -> None:
    """A test double's fault: the model step fails on its second token."""
    if index == 1:
        raise RuntimeError("the accelerator fell over")


@pytest.mark.parametrize("stream", [False, True])
async def test_an_internal_error_answers_500_with_its_cause_and_is_logged(model, stream):
    server = ModelServer(model, step_hook=failing_hook, reap_interval=3600)
    with structlog.testing.capture_logs() as logs:
        async with open_server(server, port=0) as url, httpx.AsyncClient(base_url=url) as c:
            sid = (await c.post("/open_session", json={"streaming": True})).json()
            r = await c.post("/generate", json=native_body(sid, chunk(), stream=stream))
            if stream:
                assert r.status_code == 200
                events = [line for line in r.text.splitlines() if line.startswith("data: ")]
                assert "the accelerator fell over" in events[-2] and events[-1] == "data: [DONE]"
            else:
                assert r.status_code == 500
                assert r.json()["error"]["message"] == "internal error: RuntimeError: the accelerator fell over"
            assert (await c.get("/health")).json()["internal_errors"] == 1
            s = server.sessions[sid]
            assert (s.kv.length, s.turns) == (0, 0)  # the failed turn was rolled back
    errors = [e for e in logs if e["event"] == "serve_internal_error"]
    assert len(errors) == 1 and "the accelerator fell over" in errors[0]["error"]
    assert errors[0]["exc_info"] is not None


def test_limits_are_checked_when_made():
    with pytest.raises(ValueError, match="max_sessions: expected an integer ≥ 1, got 0"):
        ServeLimits(max_sessions=0)
    with pytest.raises(ValueError, match="idle_timeout: expected at most max_idle_timeout=10"):
        ServeLimits(idle_timeout=20, max_idle_timeout=10)
    with pytest.raises(ValueError, match="max_idle_timeout: expected seconds > 0, got inf"):
        ServeLimits(max_idle_timeout=float("inf"))
