"""The streaming session: step-by-step equals one teacher-forced pass bit for bit, snapshot/restore, memory."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from model_streams import one_thread, step_inputs

from microturn.model.config import ModelConfig, tiny
from microturn.model.kv_session import KVSession, SessionError
from microturn.model.layout import EncodedTick
from microturn.model.torch_model import InteractionModel

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return InteractionModel(tiny()).eval()


def _run(session, inputs):
    return [session.step_tokens(si) for si in inputs]


def test_stepping_tick_by_tick_gives_the_same_logits_as_one_teacher_forced_pass_bitwise(model):
    """Tolerance: none. Every op of the exact path is chunking-invariant (kernels' references, det_exp,
    tree_sum, fixed split boundaries), and the ring of the local layers holds every key a query sees."""
    inputs = step_inputs(30)
    session = KVSession(model, trace=True)
    _run(session, inputs)
    assert session.length > model.cfg.window * 4  # the ring has wrapped several times
    whole = EncodedTick([])
    stepped = []
    for chunk, logits in session.trace:
        whole.extend(chunk)
        stepped.append(logits)
    stepped = torch.cat(stepped)
    reference = KVSession(model, ring=False, capacity=len(whole.tokens))
    one_pass = reference.append(whole)
    assert one_pass.shape == stepped.shape
    assert torch.equal(one_pass, stepped)


def test_snapshot_and_restore_are_bit_exact(model):
    inputs = step_inputs(24)
    session = KVSession(model, temperature=1.0, seed=3)  # sampled: the generator state is part of the snapshot
    _run(session, inputs[:12])
    snap = session.snapshot()
    first = _run(session, inputs[12:])
    after_first = [c.k.clone() for c in session.caches]
    session.restore(snap)
    second = _run(session, inputs[12:])
    assert first == second
    assert all(torch.equal(a, c.k) for a, c in zip(after_first, session.caches, strict=True))
    # a fresh session restored from the snapshot continues identically too
    other = KVSession(model, temperature=1.0, seed=99)
    other.restore(snap)
    assert _run(other, inputs[12:]) == first


def test_restore_refuses_a_snapshot_of_another_configuration(model):
    snap = KVSession(model).snapshot()
    cfg = ModelConfig(**{**{f: getattr(tiny(), f) for f in tiny().__struct_fields__}, "window": 32})
    with pytest.raises(SessionError, match="configuration"):
        KVSession(InteractionModel(cfg)).restore(snap)


def test_sessions_are_deterministic_greedy_and_seeded(model):
    inputs = step_inputs(10)
    assert _run(KVSession(model), inputs) == _run(KVSession(model), inputs)
    a = _run(KVSession(model, temperature=1.0, seed=1), inputs)
    assert a == _run(KVSession(model, temperature=1.0, seed=1), inputs)
    assert a != _run(KVSession(model, temperature=1.0, seed=2), inputs)
    assert all(1 <= len(t) <= model.cfg.outputs_per_tick for t in a)


def test_local_layers_never_grow_and_global_layers_grow_by_blocks(model):
    session = KVSession(model, grow_blocks=4)
    local = [c for c in session.caches if c.ring]
    glob = [c for c in session.caches if not c.ring]
    assert local and glob
    local_k = [c.k for c in local]
    block_bytes = 2 * glob[0].k[0].numel() * glob[0].k.element_size()
    sizes = []
    for si in step_inputs(40, images=False):
        session.step_tokens(si)
        assert [c.k for c in local] == local_k  # the same tensors: never reallocated
        sizes.append(sum(c.memory_bytes() for c in glob))
        assert glob[0].n_blocks * glob[0].block_size >= session.length
    growths = [b - a for a, b in itertools.pairwise(sizes) if b != a]
    assert growths and all(g == 4 * block_bytes for g in growths)
    assert len(growths) < 40 // 2  # not per tick
    assert session.memory_bytes() == sum(c.memory_bytes() for c in session.caches)


def test_a_chunk_larger_than_the_ring_allows_is_refused(model):
    session = KVSession(model)
    with pytest.raises(SessionError, match="max_chunk_tokens"):
        session.append(EncodedTick([65] * (model.cfg.max_chunk_tokens + 1)))


def test_the_shipped_model_stepped_tick_by_tick_equals_one_teacher_forced_pass_bitwise():
    """The embedded configuration (local layers only, window 384) on its trained weights, greedy and
    sampled, past the first window: decoding one token at a time takes the single-row paths of the exact
    ops (attention frames before and after the window fills, experts picked one token at a time), the
    chunks their batched ones, and the two must agree bit for bit."""
    from microturn.model.local import load_checkpoint
    from microturn.model.weights import EMBEDDED_CHECKPOINT

    shipped, _ = load_checkpoint(EMBEDDED_CHECKPOINT)
    for temperature in (0.0, 0.8):
        session = KVSession(shipped, temperature=temperature, seed=3, trace=True)
        _run(session, step_inputs(40, seed=1, images=False))
        assert session.length > shipped.cfg.window
        whole = EncodedTick([])
        for chunk, _ in session.trace:
            whole.extend(chunk)
        stepped = torch.cat([logits for _, logits in session.trace])
        one_pass = KVSession(shipped, ring=False, capacity=len(whole.tokens)).append(whole)
        assert torch.equal(one_pass, stepped)
