"""The Triton kernels compiled for and run on a real CUDA device (skipped without one).

The other kernel tests run Triton on the CPU through the interpreter; these run the compiled kernels on CUDA
tensors, so they need TRITON_INTERPRET unset or 0:

    TRITON_INTERPRET=0 python -m pytest -q tests/kernels/test_kernels_cuda.py

Each check compares against a float64 computation on the CPU (relative error ‖out − ref‖ / ‖ref‖) and checks the
bitwise invariances the kernels promise on the device: a row alone equals the same row inside batches of 2..16,
and chunked prefill equals one pass. Caches are NaN-poisoned so that a read of an unwritten slot shows up.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from test_kernels_attention import _naive as _attn_naive  # the same float64 reference

from microturn.kernels import (
    DECODE_SPLIT_SIZE,
    PREFILL_SPLIT_SIZE,
    attention,
    interpreter_enabled,
    kv_cache_write,
    matmul,
    moe_gemv,
    moe_grouped_gemm,
    rms_norm,
    triton_available,
)


def _skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device"
    if not triton_available():
        return "triton is not installed"
    if interpreter_enabled():
        return "TRITON_INTERPRET=1: the CUDA tests need the compiled kernels (run them with TRITON_INTERPRET=0)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

DEV = "cuda"
# Relative-error bounds (METHOD: fp32 far under 1e-3; tf32/fp16 ~1e-3; bf16 operands 1e-3..1e-2).
REL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    got = got.detach().double().cpu()
    assert torch.isfinite(got).all(), "non-finite output (an unwritten or poisoned element)"
    return float((got - ref).norm() / ref.norm())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- MoE --------------------------------------------------------------------------------------------------------


def _moe_inputs(t, d, f, e, k, dtype, seed):
    g = _gen(seed)
    w_gate_up = (torch.randn(e, 2 * f, d, generator=g) / d**0.5).to(dtype)
    w_down = (torch.randn(e, d, f, generator=g) / f**0.5).to(dtype)
    x = torch.randn(t, d, generator=g).to(dtype)
    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)]).to(torch.int32)
    weights = torch.softmax(torch.randn(t, k, generator=g), dim=-1)
    return x, ids, weights, w_gate_up, w_down


def _moe_naive(x, ids, weights, w_gate_up, w_down):
    f = w_down.shape[2]
    xd, wgu, wd = x.double(), w_gate_up.double(), w_down.double()
    h = torch.einsum("tkfd,td->tkf", wgu[ids.long()], xd)
    act = torch.nn.functional.silu(h[..., :f]) * h[..., f:]
    y = torch.einsum("tkdf,tkf->tkd", wd[ids.long()], act)
    return (weights.double()[..., None] * y).sum(1)


def _cuda(*tensors):
    return [t.to(DEV) for t in tensors]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("t", "d", "f", "e", "k"), [(1, 40, 24, 6, 3), (5, 200, 72, 8, 2), (16, 512, 352, 16, 4)])
def test_moe_gemv_and_grouped_gemm_match_float64(dtype, t, d, f, e, k):
    args = _moe_inputs(t, d, f, e, k, dtype, seed=t * 7 + d)
    ref = _moe_naive(*args)
    got = moe_gemv(*_cuda(*args))
    assert got.is_cuda and got.dtype == dtype and got.shape == (t, d)
    assert _rel(got, ref) < REL[dtype]
    # the baseline keeps its activations in the input dtype (a second rounding); fp32 uses ieee dots, no tf32
    assert _rel(moe_grouped_gemm(*_cuda(*args)), ref) < max(2 * REL[dtype], 1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_moe_gemv_batch_invariance_bitwise(dtype):
    x, ids, weights, w_gate_up, w_down = _cuda(*_moe_inputs(17, 256, 176, 8, 3, dtype, seed=3))
    alone = moe_gemv(x[:1], ids[:1], weights[:1], w_gate_up, w_down)
    for others in range(1, 16):
        at = others // 3
        order = list(range(1, others + 1))
        order.insert(at, 0)
        got = moe_gemv(x[order], ids[order], weights[order], w_gate_up, w_down)
        assert torch.equal(got[at], alone[0]), f"token differs inside a batch of {others + 1}"


def test_moe_gemv_benchmark_shape_bf16():
    # The benchmark's shape (D=2048, F=1408, E=64, k=8): a real-size check of tiles and masks.
    args = _moe_inputs(4, 2048, 1408, 64, 8, torch.bfloat16, seed=11)
    assert _rel(moe_gemv(*_cuda(*args)), _moe_naive(*args)) < REL[torch.bfloat16]


# --- attention --------------------------------------------------------------------------------------------------


class _Cache:
    def __init__(self, hkv, dh, dtype, block, num_blocks, seed):
        self.g = _gen(seed)
        self.k = torch.full((num_blocks, block, hkv, dh), float("nan"), dtype=dtype, device=DEV)
        self.v = torch.full((num_blocks, block, hkv, dh), float("nan"), dtype=dtype, device=DEV)
        self.free = torch.randperm(num_blocks, generator=self.g).tolist()
        self.block, self.hkv, self.dh, self.dtype = block, hkv, dh, dtype

    def table(self, positions):
        n = -(-positions // self.block)
        return torch.tensor([self.free.pop() for _ in range(n)], dtype=torch.int32, device=DEV)

    def tokens(self, n):
        shape = (n, self.hkv, self.dh)
        return (
            torch.randn(shape, generator=self.g).to(self.dtype),
            torch.randn(shape, generator=self.g).to(self.dtype),
        )

    def session(self, length, capacity=None):
        table = self.table(capacity or length)
        k, v = self.tokens(length)
        kv_cache_write(self.k, self.v, table, 0, k.to(DEV), v.to(DEV))
        return table, k, v




@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("hq", "hkv", "dh"), [(32, 8, 128), (8, 8, 64), (6, 2, 80)])
@pytest.mark.parametrize("window", [None, 300])
@pytest.mark.parametrize(("length", "new", "split"), [(1500, 1, DECODE_SPLIT_SIZE), (700, 70, PREFILL_SPLIT_SIZE)])
def test_attention_matches_float64(dtype, hq, hkv, dh, window, length, new, split):
    cache = _Cache(hkv, dh, dtype, block=16, num_blocks=160, seed=length + hq + dh)
    table, k, v = cache.session(length)
    q = torch.randn(new, hq, dh, generator=cache.g).to(dtype)
    got = attention(q.to(DEV), cache.k, cache.v, table, length, split_size=split, window=window)
    assert got.is_cuda and got.dtype == dtype and got.shape == q.shape
    assert _rel(got, _attn_naive(q, k, v, length - new, window)) < REL[dtype]


def test_attention_non_causal():
    cache = _Cache(2, 64, torch.float32, block=16, num_blocks=16, seed=5)
    table, k, v = cache.session(100)
    q = torch.randn(9, 4, 64, generator=cache.g)
    got = attention(q.to(DEV), cache.k, cache.v, table, 100, causal=False, split_size=32)
    assert _rel(got, _attn_naive(q, k, v, 91, causal=False)) < REL[torch.float32]


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_decode_batch_invariance_bitwise(dtype):
    cache = _Cache(8, 128, dtype, block=16, num_blocks=700, seed=9)
    table0, _, _ = cache.session(1234, capacity=2048)
    q0 = torch.randn(1, 32, 128, generator=cache.g).to(dtype).to(DEV)
    alone = attention(q0, cache.k, cache.v, table0, 1234, split_size=DECODE_SPLIT_SIZE)
    others = []
    for i in range(4):
        length = 37 + 401 * i
        table, _, _ = cache.session(length, capacity=2048)
        others.append((table, length))
    for size in range(2, 17):
        at = min(size % 3, size - 1)
        rows = [torch.randn(1, 32, 128, generator=cache.g).to(dtype).to(DEV) for _ in range(size - 1)]
        tables = [others[i % 4][0] for i in range(size - 1)]
        lengths = [others[i % 4][1] for i in range(size - 1)]
        rows.insert(at, q0)
        tables.insert(at, table0)
        lengths.insert(at, 1234)
        got = attention(
            torch.cat(rows), cache.k, cache.v, torch.stack(tables),
            torch.tensor(lengths, dtype=torch.int32, device=DEV),
            query_start=torch.arange(size + 1, dtype=torch.int32, device=DEV), split_size=DECODE_SPLIT_SIZE,
        )  # fmt: skip
        assert torch.equal(got[at], alone[0]), f"decode row differs inside a batch of {size}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("window", "chunk", "split"), [(None, 1, 64), (None, 37, PREFILL_SPLIT_SIZE),
                                                        (200, 16, 128), (None, 100, DECODE_SPLIT_SIZE)])  # fmt: skip
def test_attention_chunked_prefill_equals_one_pass_bitwise(dtype, window, chunk, split):
    cache = _Cache(2, 64, dtype, block=16, num_blocks=80, seed=13)
    length = 600
    k, v = cache.tokens(length)
    q = torch.randn(length, 8, 64, generator=cache.g).to(dtype)
    kd, vd, qd = k.to(DEV), v.to(DEV), q.to(DEV)
    one_table = cache.table(length)
    kv_cache_write(cache.k, cache.v, one_table, 0, kd, vd)
    one_pass = attention(qd, cache.k, cache.v, one_table, length, split_size=split, window=window)
    chunk_table = cache.table(length)
    parts = []
    for start in range(0, length, chunk):
        end = min(start + chunk, length)
        kv_cache_write(cache.k, cache.v, chunk_table, start, kd[start:end], vd[start:end])
        parts.append(attention(qd[start:end], cache.k, cache.v, chunk_table, end, split_size=split, window=window))
    assert torch.equal(torch.cat(parts), one_pass)
    assert _rel(one_pass, _attn_naive(q, k, v, 0, window)) < REL[dtype]


def test_attention_sessions_batched_equal_each_alone_bitwise():
    cache = _Cache(4, 128, torch.bfloat16, block=16, num_blocks=340, seed=17)
    lengths, news = [700, 33, 1029, 5, 64], [20, 1, 0, 5, 17]
    tables, qs = [], []
    for length, new in zip(lengths, news, strict=True):
        tables.append(cache.session(length, capacity=1040)[0])
        qs.append(torch.randn(new, 16, 128, generator=cache.g).to(torch.bfloat16).to(DEV))
    starts = [0]
    for new in news:
        starts.append(starts[-1] + new)
    batched = attention(
        torch.cat(qs), cache.k, cache.v, torch.stack(tables), torch.tensor(lengths, device=DEV),
        query_start=torch.tensor(starts, device=DEV), split_size=256, window=500,
    )  # fmt: skip
    for b, (length, new) in enumerate(zip(lengths, news, strict=True)):
        if new:
            alone = attention(qs[b], cache.k, cache.v, tables[b], length, split_size=256, window=500)
            assert torch.equal(batched[starts[b] : starts[b + 1]], alone), f"session {b} differs inside the batch"


# --- RMSNorm and matmul -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "d"), [(1, 1), (7, 37), (33, 2048), (3, 5000)])
def test_rms_norm_matches_float64_and_is_batch_invariant(dtype, rows, d):
    g = _gen(rows + d)
    x = torch.randn(rows, d, generator=g).to(dtype)
    w = torch.randn(d, generator=g).to(dtype)
    xd = x.double()
    ref = xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-5) * w.double()
    got = rms_norm(x.to(DEV), w.to(DEV), 1e-5)
    assert got.dtype == dtype and _rel(got, ref) < REL[dtype]
    for r in range(rows):
        assert torch.equal(rms_norm(x[r : r + 1].to(DEV), w.to(DEV), 1e-5)[0], got[r])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("m", "k", "n"), [(1, 8, 5), (17, 300, 70), (64, 2048, 2048)])
def test_matmul_matches_float64(dtype, m, k, n):
    g = _gen(m + k + n)
    a = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(n, k, generator=g).to(dtype)  # a Linear weight, used transposed
    got = matmul(a.to(DEV), b.to(DEV).t())
    assert got.dtype == dtype and got.shape == (m, n)
    assert _rel(got, a.double() @ b.double().t()) < REL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_batch_invariance_bitwise(dtype):
    g = _gen(2)
    w = torch.randn(512, 1024, generator=g).to(dtype).to(DEV)
    row = torch.randn(1, 1024, generator=g).to(dtype).to(DEV)
    alone = matmul(row, w.t())
    for size in range(2, 17):
        batch = torch.randn(size, 1024, generator=g).to(dtype).to(DEV)
        at = size // 2
        batch[at] = row[0]
        assert torch.equal(matmul(batch, w.t())[at], alone[0]), f"row differs inside a batch of {size}"
    big = torch.randn(100, 1024, generator=g).to(dtype).to(DEV)
    big[77] = row[0]
    assert torch.equal(matmul(big, w.t())[77], alone[0])
