import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from microturn.kernels import (
    KernelInputError,
    interpreter_problem,
    moe_align_block_size,
    moe_gemv,
    moe_gemv_reference,
    moe_grouped_gemm,
)

requires_triton = pytest.mark.skipif(interpreter_problem() is not None, reason=str(interpreter_problem()))
# The reference always; Triton on the CPU through its interpreter (TRITON_INTERPRET=1).
BACKENDS = ["torch", pytest.param("triton", marks=requires_triton)]


D, F, E, K = 40, 24, 6, 3
TOL = {torch.float32: 2e-5, torch.float16: 2e-3}


def _weights(dtype, seed=0, d=D, f=F, e=E):
    g = torch.Generator().manual_seed(seed)
    w_gate_up = (torch.randn(e, 2 * f, d, generator=g) / d**0.5).to(dtype)
    w_down = (torch.randn(e, d, f, generator=g) / f**0.5).to(dtype)
    return w_gate_up, w_down


def _routing(t, seed=1, e=E, k=K):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)]) if t else torch.zeros(0, k)
    weights = torch.softmax(torch.randn(t, k, generator=g), dim=-1)
    return ids.to(torch.int32), weights


def _naive(x, ids, weights, w_gate_up, w_down):
    f = w_down.shape[2]
    out = torch.zeros(x.shape, dtype=torch.float64)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            h = w_gate_up[e].double() @ x[t].double()
            act = torch.nn.functional.silu(h[:f]) * h[f:]
            out[t] += float(weights[t, j]) * (w_down[e].double() @ act)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("t", [1, 5])
def test_gemv_matches_naive(backend, dtype, t):
    w_gate_up, w_down = _weights(dtype)
    ids, weights = _routing(t)
    x = torch.randn(t, D, generator=torch.Generator().manual_seed(10 + t)).to(dtype)
    got = moe_gemv(x, ids, weights, w_gate_up, w_down, backend=backend)
    assert got.dtype == dtype and got.shape == (t, D)
    torch.testing.assert_close(
        got.double(), _naive(x, ids, weights, w_gate_up, w_down), atol=TOL[dtype], rtol=TOL[dtype]
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_grouped_gemm_baseline_matches_gemv(backend, dtype):
    w_gate_up, w_down = _weights(dtype)
    ids, weights = _routing(7)
    x = torch.randn(7, D, generator=torch.Generator().manual_seed(7)).to(dtype)
    want = moe_gemv_reference(x, ids, weights, w_gate_up, w_down)
    got = moe_grouped_gemm(x, ids, weights, w_gate_up, w_down, backend=backend)
    torch.testing.assert_close(got.float(), want.float(), atol=2 * TOL[dtype], rtol=2 * TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_batch_invariance_bitwise(backend, dtype):
    w_gate_up, w_down = _weights(dtype, seed=4)
    x_all = torch.randn(17, D, generator=torch.Generator().manual_seed(17)).to(dtype)
    ids_all, weights_all = _routing(17, seed=5)
    alone = moe_gemv(x_all[:1], ids_all[:1], weights_all[:1], w_gate_up, w_down, backend=backend)
    for others in range(2, 17):
        # token 0 placed among `others` other tokens, some routed to the same experts
        at = others // 3
        order = list(range(1, others + 1))
        order.insert(at, 0)
        got = moe_gemv(x_all[order], ids_all[order], weights_all[order], w_gate_up, w_down, backend=backend)
        assert torch.equal(got[at], alone[0]), f"token differs inside a batch of {others} others"


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_experts_duplicates_and_no_tokens(backend):
    w_gate_up, w_down = _weights(torch.float32, e=8)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, D, generator=g)
    ids = torch.tensor([[7, 7, 2], [2, 7, 7], [7, 2, 2], [2, 2, 7]])  # experts 0,1,3..6 get nothing
    weights = torch.rand(4, 3, generator=g)
    got = moe_gemv(x, ids, weights, w_gate_up, w_down, backend=backend)
    torch.testing.assert_close(got.double(), _naive(x, ids, weights, w_gate_up, w_down), atol=2e-5, rtol=2e-5)
    # Poisoning the unused experts changes nothing: they are never read.
    w_gate_up[[0, 1, 3, 4, 5, 6]] = float("nan")
    w_down[[0, 1, 3, 4, 5, 6]] = float("nan")
    assert torch.equal(moe_gemv(x, ids, weights, w_gate_up, w_down, backend=backend), got)
    none = moe_gemv(x[:0], ids[:0], weights[:0], w_gate_up, w_down, backend=backend)
    assert none.shape == (0, D)


@requires_triton
def test_grouped_gemm_with_empty_experts():
    w_gate_up, w_down = _weights(torch.float32, e=8)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, D, generator=g)
    ids = torch.tensor([[5, 1, 1], [5, 5, 1], [1, 5, 5]], dtype=torch.int32)
    weights = torch.rand(3, 3, generator=g)
    torch.testing.assert_close(
        moe_grouped_gemm(x, ids, weights, w_gate_up, w_down, backend="triton"),
        moe_gemv_reference(x, ids, weights, w_gate_up, w_down),
        atol=2e-5,
        rtol=2e-5,
    )


def test_align_block_size_sorts_and_pads():
    ids = torch.tensor([[2, 0], [2, 1], [0, 2]])
    sorted_pairs, block_experts, num_padded = moe_align_block_size(ids, num_experts=4, block_m=2)
    # flat pairs t*k+j -> experts [2, 0, 2, 1, 0, 2]; expert 0 gets 2 pairs, 1 gets 1 (+1 pad), 2 gets 3
    # (+1 pad), 3 none; padding slots hold T*k = 6
    assert int(num_padded) == 8
    assert sorted_pairs[:8].tolist() == [1, 4, 3, 6, 0, 2, 5, 6]
    assert block_experts[:4].tolist() == [0, 1, 2, 2]
    assert (block_experts[4:] == 4).all()


def _good():
    w_gate_up, w_down = _weights(torch.float32)
    ids, weights = _routing(2)
    x = torch.randn(2, D, generator=torch.Generator().manual_seed(2))
    return dict(x=x, topk_ids=ids, topk_weights=weights, w_gate_up=w_gate_up, w_down=w_down)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(x=torch.zeros(2, D + 1)), r"w_gate_up: expected shape \[E, 2F, D=41\], got \[6, 48, 40\]"),
        (dict(x=torch.zeros(3, D)), r"topk_ids: expected shape \[T=3, k\], got \[2, 3\]"),
        (dict(topk_ids=torch.zeros(2, 3)), "topk_ids: expected dtype in"),
        (dict(topk_ids=torch.full((2, 3), E, dtype=torch.int64)), r"topk_ids: expected expert ids in \[0, E=6\)"),
        (dict(topk_weights=torch.ones(2, 4)), r"topk_weights: expected shape \[T=2, k=3\]"),
        (dict(w_down=torch.zeros(E, D, F + 1)), r"w_down: expected shape \[E=6, D=40, F=24\]"),
        (dict(w_gate_up=torch.zeros(E, 2 * F + 1, D)), "even second dimension"),
        (dict(w_down=torch.zeros(E, D, F, dtype=torch.float16)), "w_down: expected dtype torch.float32"),
        (dict(x=torch.zeros(2, D, 1)), r"x: expected a 2-d tensor of shape \[T, D\]"),
    ],
)
def test_bad_input(change, message):
    args = {**_good(), **change}
    with pytest.raises(KernelInputError, match=message):
        moe_gemv(**args)
