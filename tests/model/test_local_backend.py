"""The local backend: protocol conformance, checkpoints, and a real lockstep session driven by it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from model_streams import one_thread, step_inputs

from microturn.actors import ClockActor, DialogStateActor, InteractionActor, OutputMixer, PerceptionActor
from microturn.messages import OutputChunk, UserText
from microturn.model.config import tiny
from microturn.model.local import CheckpointError, LocalBackend, load_checkpoint, save_checkpoint
from microturn.model.protocol import ModelBackend, ModelSpec, StepOutput
from microturn.runtime import open_session, read_recording

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


async def test_the_local_backend_implements_the_protocol():
    backend = LocalBackend.random(tiny(), seed=1)
    assert isinstance(backend, ModelBackend) and backend.name == "local"
    session = await backend.open_session(ModelSpec())
    assert session.blocking
    outs = [session.step_sync(si) for si in step_inputs(5)]
    assert all(isinstance(o, StepOutput) for o in outs)
    assert session.memory_bytes() > 0
    await session.close()


def test_random_backends_are_reproducible_from_their_seed():
    a, b, c = (LocalBackend.random(tiny(), seed=s) for s in (1, 1, 2))
    assert torch.equal(a.model.head, b.model.head) and not torch.equal(a.model.head, c.model.head)


def test_checkpoints_round_trip_and_refuse_corrupt_or_mismatched_files(tmp_path):
    model = LocalBackend.random(tiny(), seed=3).model
    path = save_checkpoint(model, tmp_path / "m", {"data_seed": 7})
    loaded, manifest = load_checkpoint(path, config=tiny())
    assert manifest["data_seed"] == 7 and manifest["config"]["d_model"] == tiny().d_model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(),
                                                   strict=True))
    assert LocalBackend(path).manifest["sha256"] == manifest["sha256"]
    # a mismatched config
    with pytest.raises(CheckpointError, match="config mismatch"):
        load_checkpoint(path, config=tiny().__class__(**{**{f: getattr(tiny(), f) for f in tiny().__struct_fields__},
                                                          "window": 32}))
    # a flipped byte
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(path)
    # no manifest
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="manifest"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing")


async def _record(path):
    backend = LocalBackend.random(tiny(), seed=5)
    actors = [ClockActor(), PerceptionActor(), DialogStateActor(), InteractionActor(backend=backend), OutputMixer()]
    seen = []
    async with open_session(actors, record=path, session_id="local", taps=[seen.append]) as session:
        session.schedule(UserText(text="hello there"), 0.3)
        await session.run_for(3.0)
    return seen


async def test_the_local_backend_drives_a_lockstep_session_deterministically(autojump_clock, tmp_path):
    first = await _record(tmp_path / "a.mtrec")
    second = await _record(tmp_path / "b.mtrec")
    outputs = [m for m in first if isinstance(m, OutputChunk)]
    assert len(outputs) >= 10  # one output per tick: the model stepped every tick
    assert first == second
    assert (tmp_path / "a.mtrec").read_bytes() == (tmp_path / "b.mtrec").read_bytes()
    assert len(read_recording(tmp_path / "a.mtrec").messages) == len(first)
