"""microturn's sglang client across a restart of a REAL ``microturn serve`` process: the session the server
lost is rebuilt on a new one (context resent, a clear log event), and the outputs go on as if nothing happened;
where it cannot be rebuilt, :class:`ModelServerLost` says the model server went away."""

from __future__ import annotations

import pytest
import structlog
from model_streams import step_inputs
from serve_harness import ServerProcess, free_port

from microturn.model import sglang
from microturn.model.protocol import ModelSpec
from microturn.model.sglang import ModelServerLost, open_sglang_backend

TICKS = 10


def inputs(seed: int):
    return step_inputs(TICKS, seed, images=seed % 2 == 0)


async def run_through(url_of, restart_at: int | None, seed: int, mode: str = "native"):
    """Step TICKS ticks; before tick ``restart_at`` the server is restarted (``url_of()`` gives its URL)."""
    outs = []
    async with open_sglang_backend(url_of(), realtime=False, mode=mode) as backend:
        session = await backend.open_session(ModelSpec())
        for t, si in enumerate(inputs(seed)):
            if t == restart_at:
                url_of(restart=True)
            outs.append(await session.step(si))
    return outs, session


class Restartable:
    """A serve process on a fixed port that the test can restart (a fresh process: every session lost)."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.starts = 0
        self.server = self._start()

    def _start(self) -> ServerProcess:
        self.starts += 1
        return ServerProcess(self.tmp_path / f"log{self.starts}.jsonl", port=self.port)

    def __call__(self, restart: bool = False) -> str:
        if restart:
            assert self.server.stop() == 0
            self.server = self._start()
        return self.server.url

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def restartable(tmp_path):
    r = Restartable(tmp_path)
    yield r
    r.stop()


@pytest.mark.parametrize(("seed", "restart_at"), [(0, 5), (1, 1)])
async def test_a_session_the_server_lost_is_rebuilt_and_its_outputs_go_on_unchanged(restartable, seed, restart_at):
    alone, _ = await run_through(restartable, None, seed)
    with structlog.testing.capture_logs() as logs:
        outs, session = await run_through(restartable, restart_at, seed)
    assert session.reopened == 1
    reopened = [e for e in logs if e["event"] == "sglang_session_reopened"]
    assert len(reopened) == 1 and reopened[0]["resent_turns"] == restart_at
    assert "no open session" in reopened[0]["reason"]
    assert not [e for e in logs if e["event"] in ("actor_failed", "sglang_turn_failed")]
    assert outs == alone


async def test_a_text_session_is_rebuilt_too(restartable):
    outs, session = await run_through(restartable, 3, 0, mode="text")
    assert session.reopened == 1 and len(outs) == TICKS


async def test_a_server_gone_for_good_ends_the_session_with_model_server_lost(restartable):
    async with open_sglang_backend(restartable(), realtime=False, retries=1, backoff=0.001,
                                   max_failures=2) as backend:
        session = await backend.open_session(ModelSpec())
        ticks = iter(inputs(0))
        await session.step(next(ticks))
        restartable.stop()
        with pytest.raises(ModelServerLost, match="went away: it could not be reached for 3 turns in a row"):
            for si in ticks:
                await session.step(si)


async def test_a_context_too_long_to_resend_ends_the_session_with_model_server_lost(restartable, monkeypatch):
    monkeypatch.setattr(sglang, "MAX_RESEND", 60)  # a tick is ~30 positions: two turns are more than that
    async with open_sglang_backend(restartable(), realtime=False) as backend:
        session = await backend.open_session(ModelSpec())
        ticks = iter(inputs(1))
        for _ in range(3):
            await session.step(next(ticks))
        assert session.context is None
        restartable(restart=True)
        with pytest.raises(ModelServerLost, match="too long to resend"):
            await session.step(next(ticks))
