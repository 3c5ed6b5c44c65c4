"""Audio out: the flow head trained on the oracle's voiced speech (trunk frozen), and sessions that sample it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microturn.audio import espeak_available
from microturn.audio.dmel import levels_from_unit, quantize, unit_from_mel
from microturn.messages import InputChunk
from microturn.model.config import tiny
from microturn.model.kv_session import KVSession
from microturn.model.local import CheckpointError, LocalBackend, save_checkpoint
from microturn.model.protocol import StepInput
from microturn.model.torch_model import InteractionModel
from microturn.training.flow import FRAMES_PER_TICK, flow_pairs, record_audio_dialogs, train_flow


def test_unit_frames_round_trip_to_the_dmel_levels() -> None:
    rng = np.random.default_rng(0)
    mel = 10.0 ** rng.uniform(-8, 3, size=(50, 80))
    unit = unit_from_mel(mel)
    assert unit.min() >= -1 and unit.max() <= 1
    assert (levels_from_unit(unit) == quantize(mel)).mean() > 0.99  # float32 rounding may flip a boundary


@pytest.fixture(scope="module")
def voiced():
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    return record_audio_dialogs(11, 4)


def test_the_oracles_voice_becomes_frames_aligned_with_its_words(voiced) -> None:
    for d in voiced:
        assert d.frames.shape == (len(d.ticks), FRAMES_PER_TICK, 80)
        loud = d.frames.mean(axis=(1, 2)) > -0.9
        spoke = np.array([bool(t.output.text) for t in d.ticks])
        assert loud.any() and not loud.all()
        # a window is voiced mostly right after steps that said words (a word plays over two windows)
        assert loud[spoke].mean() > loud[~spoke].mean()


def test_the_flow_head_learns_the_voice_from_the_trunk_states(voiced) -> None:
    torch.manual_seed(0)
    model = InteractionModel(tiny())
    trunk = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("flow.")}
    train, held = flow_pairs(model, voiced[:3]), flow_pairs(model, voiced[3:])
    assert train[0].shape == (sum(len(d.ticks) for d in voiced[:3]) * FRAMES_PER_TICK, model.cfg.d_model)
    result = train_flow(model, train, held, steps=600)
    assert result.loss_after < 0.6 * result.loss_before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in trunk.items())  # the trunk stayed frozen


def test_a_session_with_audio_samples_four_frames_without_changing_its_words() -> None:
    torch.manual_seed(1)
    model = InteractionModel(tiny()).eval()
    inputs = [StepInput(chunk=InputChunk(tick=t, text="hello there" if t == 1 else "")) for t in range(6)]
    plain, voiced_a, voiced_b = KVSession(model), KVSession(model, audio=True, seed=4), KVSession(model, audio=True, seed=4)
    outs = []
    for inp in inputs:
        p, a, b = plain.step(inp), voiced_a.step(inp), voiced_b.step(inp)
        assert (p.text, p.controls) == (a.text, a.controls)
        assert len(a.audio) == 4 * 80 and a.audio == b.audio  # seeded: (seed, tick) decides the noise
        assert max(a.audio) <= 15
        outs.append(a.audio)
    snap = voiced_a.snapshot()
    again = voiced_a.step(inputs[0])
    voiced_a.restore(snap)
    assert voiced_a.step(inputs[0]).audio == again.audio


def test_audio_needs_a_checkpoint_whose_flow_head_was_trained(tmp_path) -> None:
    path = save_checkpoint(InteractionModel(tiny()), tmp_path / "m.pt", {"note": "no flow stage"})
    with pytest.raises(CheckpointError, match="flow head was never trained"):
        LocalBackend(path, audio=True)
    save_checkpoint(InteractionModel(tiny()), tmp_path / "f.pt", {"flow": {"steps": 1}})
    assert LocalBackend(tmp_path / "f.pt", audio=True).audio
