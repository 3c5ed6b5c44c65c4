"""The server side of a step: stepping on an already encoded chunk, and undoing a failed or aborted turn.

Rollback copies nothing: it is bit-exact because the local layers' ring holds window + max chunk + one block,
so one turn's writes never land on a key the window still needs (checked here with the ring wrapped many times).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from model_streams import one_thread, step_inputs

from microturn.model.config import tiny
from microturn.model.kv_session import KVSession, SessionError
from microturn.model.layout import DMEL, END, EncodedTick, TickEncoder
from microturn.model.torch_model import InteractionModel

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return InteractionModel(tiny()).eval()


def _encode_all(cfg, inputs):
    enc = TickEncoder(cfg.max_input_tokens)
    return [enc.encode(si) for si in inputs]


def _worst_chunk(cfg):
    """A chunk as large as a tick may be: the header plus max_input_tokens dMel frames."""
    n = cfg.max_input_tokens
    return EncodedTick([256 + 1] + [300] * 5 + [DMEL] * n, dmel=[bytes([i % 16] * 80) for i in range(n)])


def test_step_encoded_is_step_tokens_with_the_encoder_outside(model):
    inputs = step_inputs(20)
    a = KVSession(model)
    b = KVSession(model)
    chunks = _encode_all(model.cfg, inputs)
    assert [a.step_tokens(si) for si in inputs] == [b.step_encoded(c) for c in chunks]


def test_the_ring_leaves_room_for_one_whole_turn(model):
    cfg = model.cfg
    session = KVSession(model)
    assert session.rollback_room() >= cfg.max_chunk_tokens + cfg.outputs_per_tick - 1


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_rollback_is_bit_exact_against_a_session_that_never_ran_the_turn(model, temperature):
    cfg = model.cfg
    chunks = _encode_all(cfg, step_inputs(40))
    ran = KVSession(model, temperature=temperature, seed=5, trace=True)
    never = KVSession(model, temperature=temperature, seed=5, trace=True)
    for c in chunks[:25]:
        ran.step_encoded(c)
        never.step_encoded(c)
    assert ran.length > 3 * cfg.window  # the ring has wrapped
    mark = ran.mark()
    tokens = ran.step_encoded(_worst_chunk(cfg), max_new_tokens=cfg.outputs_per_tick)
    assert len(tokens) >= 1
    ran.rollback(mark)
    ran.trace.clear()
    never.trace.clear()
    assert [ran.step_encoded(c) for c in chunks[25:]] == [never.step_encoded(c) for c in chunks[25:]]
    for (ca, la), (cb, lb) in zip(ran.trace, never.trace, strict=True):
        assert ca.tokens == cb.tokens
        assert torch.equal(la, lb)
    assert (ran.length, ran.carry, ran.ticks) == (never.length, never.carry, never.ticks)


def test_a_turn_aborted_half_way_rolls_back_too(model):
    chunks = _encode_all(model.cfg, step_inputs(30))
    ran, never = KVSession(model), KVSession(model)
    for c in chunks[:10]:
        ran.step_encoded(c)
        never.step_encoded(c)
    mark = ran.mark()

    class Abort(Exception):
        pass

    seen = []

    def on_token(token):
        seen.append(token)
        if len(seen) == 3:
            raise Abort

    with pytest.raises(Abort):
        ran.step_encoded(chunks[10], on_token=on_token)
    ran.rollback(mark)
    assert [ran.step_encoded(c) for c in chunks[10:]] == [never.step_encoded(c) for c in chunks[10:]]


def test_rollback_refuses_a_turn_too_long_to_undo(model):
    session = KVSession(model)
    for c in _encode_all(model.cfg, step_inputs(5)):
        session.step_encoded(c)
    mark = session.mark()
    room = session.rollback_room()
    while session.length - mark.length <= room:
        session.append(EncodedTick([END]))
    with pytest.raises(SessionError, match="rollback"):
        session.rollback(mark)


def test_max_new_tokens_must_be_positive(model):
    with pytest.raises(SessionError, match="max_new_tokens"):
        KVSession(model).step_encoded(EncodedTick([257]), max_new_tokens=0)
