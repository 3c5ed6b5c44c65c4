"""End to end over real HTTP on loopback: the sglang backend against ``microturn serve`` gives what the local
backend gives in process — a whole library scenario, and 50 sessions at once on one server."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio
from model_streams import step_inputs

torch = pytest.importorskip("torch")

import microturn
from microturn.cli import main
from microturn.model.local import LocalBackend, save_checkpoint
from microturn.model.protocol import ModelSpec
from microturn.model.sglang import SglangBackend, open_sglang_backend
from microturn.assembly import make_backend
from microturn.scenarios.runner import run_scenario
from microturn.serve import ModelServer, open_server, serve_in_thread

LIBRARY = Path(microturn.__file__).parent / "scenarios" / "library"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_backend):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(tiny_backend.model, path, {"note": "untrained, for tests"})
    return path


def _content(result):
    """Every message of a run, encoded (stamps included): equal runs give equal lists."""
    return [msgspec.msgpack.encode(m) for m in result.messages]


@pytest.mark.parametrize("name", ["smooth-turn-text", "image-mid-sentence"])
def test_a_library_scenario_through_the_server_equals_the_local_backend(checkpoint, name):
    scenario = LIBRARY / f"{name}.toml"
    local = run_scenario(scenario, model=f"local:{checkpoint}")
    server = ModelServer(LocalBackend(checkpoint).model, name=str(checkpoint))
    with serve_in_thread(server) as url:
        remote = run_scenario(scenario, model=f"sglang:{url}")
        assert server.stats()["sessions"] == 0  # the session was closed at the end
    assert remote.model == f"sglang:{url}"
    assert _content(remote) == _content(local)
    assert [o.ok for o in remote.outcomes] == [o.ok for o in local.outcomes]
    steps = sum(type(m).__name__ == "OutputChunk" for m in local.messages)
    assert steps > 20 and server.requests >= steps


def test_microturn_run_with_url(checkpoint, tmp_path, capsys):
    scenario = tmp_path / "hello.toml"
    scenario.write_text('duration = 2.0\n[[timeline]]\nkind = "say"\nat = 0.4\ntext = "hello there"\n')
    server = ModelServer(LocalBackend(checkpoint).model)
    with serve_in_thread(server) as url:
        assert main(["run", str(scenario), "--model", "sglang", "--url", url]) == 0
        assert f"model sglang:{url}" in capsys.readouterr().out
        assert main(["run", str(scenario), "--model", "sglang-text", "--url", url]) == 0
    assert main(["run", str(scenario), "--model", "scripted", "--url", url]) == 2
    assert "--url goes with --model sglang" in capsys.readouterr().err
    assert main(["run", str(scenario), "--model", "sglang"]) == 2
    assert "needs a server URL" in capsys.readouterr().err


def test_the_registry_makes_sglang_backends():
    backend = make_backend("sglang:http://127.0.0.1:1")
    assert isinstance(backend, SglangBackend) and backend.mode == "native" and backend.url == "http://127.0.0.1:1"
    assert make_backend("sglang-text:http://127.0.0.1:1").mode == "text"


async def test_fifty_concurrent_sessions_lose_and_cross_no_turn(tiny_backend):
    n_sessions, n_ticks = 50, 6
    inputs = {i: step_inputs(n_ticks, seed=i, images=False) for i in range(n_sessions)}
    alone = {}
    for i in range(n_sessions):  # each session run alone, in process
        session = await tiny_backend.open_session(ModelSpec())
        alone[i] = [session.step_sync(si) for si in inputs[i]]
    server = ModelServer(tiny_backend.model)
    got: dict[int, list] = {}
    async with open_server(server, port=0) as url, open_sglang_backend(url, realtime=False) as backend:
        async def run(i):
            session = await backend.open_session(ModelSpec())
            outs = []
            for si in inputs[i]:
                outs.append(await session.step(si))
                await trio.lowlevel.checkpoint()
            got[i] = (outs, session)

        async with trio.open_nursery() as nursery:
            for i in range(n_sessions):
                nursery.start_soon(run, i)
        assert server.stats()["sessions"] == n_sessions
    for i in range(n_sessions):
        outs, session = got[i]
        assert outs == alone[i], f"session {i}"
        assert [t.cached_tokens for t in session.turns][1:] == [
            t.prompt_tokens + t.completion_tokens for t in session.turns][:-1]
    assert server.stats()["sessions"] == 0
