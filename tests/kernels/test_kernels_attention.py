import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

import microturn.kernels.split_kv as split_kv_module
from microturn.kernels import (
    DECODE_SPLIT_SIZE,
    KernelInputError,
    attention,
    interpreter_problem,
    kv_cache_write,
)

requires_triton = pytest.mark.skipif(interpreter_problem() is not None, reason=str(interpreter_problem()))
# The reference always; Triton on the CPU through its interpreter (TRITON_INTERPRET=1).
BACKENDS = ["torch", pytest.param("triton", marks=requires_triton)]


TOL = {torch.float32: 2e-5, torch.float16: 2e-3}
BLOCK = 4  # tokens per cache block
NUM_BLOCKS = 64


class Cache:
    """A paged KV cache shared by several sessions, each with its own shuffled block table."""

    def __init__(
        self, hkv: int, dh: int, dtype: torch.dtype, max_blocks: int = 16, seed: int = 0, num_blocks: int = NUM_BLOCKS
    ):
        self.gen = torch.Generator().manual_seed(seed)
        # NaN-filled so that reading a slot that was never written shows up in the results.
        self.k = torch.full((num_blocks, BLOCK, hkv, dh), float("nan"), dtype=dtype)
        self.v = torch.full((num_blocks, BLOCK, hkv, dh), float("nan"), dtype=dtype)
        self.free = torch.randperm(num_blocks, generator=self.gen).tolist()
        self.max_blocks = max_blocks
        self.hkv, self.dh, self.dtype = hkv, dh, dtype

    def new_session(self) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        table = torch.tensor([self.free.pop() for _ in range(self.max_blocks)], dtype=torch.int32)
        return table, [], []

    def tokens(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (n, self.hkv, self.dh)
        return (
            torch.randn(shape, generator=self.gen).to(self.dtype),
            torch.randn(shape, generator=self.gen).to(self.dtype),
        )


def _naive(q, k, v, pos0, window=None, causal=True):
    """float64 softmax attention of q [T, Hq, Dh] at positions pos0.. over contiguous k, v [L, Hkv, Dh]."""
    group = q.shape[1] // k.shape[1]
    kk = k.double().repeat_interleave(group, 1)
    vv = v.double().repeat_interleave(group, 1)
    scores = torch.einsum("thd,lhd->htl", q.double(), kk) * q.shape[2] ** -0.5
    p = torch.arange(pos0, pos0 + q.shape[0])[:, None]
    j = torch.arange(k.shape[0])[None, :]
    mask = j <= p if causal else torch.ones_like(j <= p)
    if window:
        mask = mask & (j > p - window)
    return torch.einsum("htl,lhd->thd", scores.masked_fill(~mask, float("-inf")).softmax(-1), vv)


def _filled(cache: Cache, length: int, hq: int):
    table, _, _ = cache.new_session()
    k, v = cache.tokens(length)
    kv_cache_write(cache.k, cache.v, table, 0, k, v)
    return table, k, v


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("hq", "hkv", "dh"), [(4, 2, 8), (3, 1, 12)])
@pytest.mark.parametrize("window", [None, 7])
def test_matches_naive(backend, dtype, hq, hkv, dh, window):
    cache = Cache(hkv, dh, dtype)
    length, new = 37, 5
    table, k, v = _filled(cache, length, hq)
    q = torch.randn(new, hq, dh, generator=cache.gen).to(dtype)
    got = attention(q, cache.k, cache.v, table, length, split_size=16, window=window, backend=backend)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.double(), _naive(q, k, v, length - new, window), atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_causal_and_default_split(backend):
    cache = Cache(2, 8, torch.float32)
    table, k, v = _filled(cache, 21, 4)
    q = torch.randn(3, 4, 8, generator=cache.gen)
    got = attention(q, cache.k, cache.v, table, 21, causal=False, backend=backend)
    torch.testing.assert_close(got.double(), _naive(q, k, v, 18, causal=False), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_of_sessions_matches_each_session_alone_bitwise(backend):
    cache = Cache(2, 8, torch.float32, max_blocks=12)
    lengths, news = [30, 9, 17, 5], [4, 1, 0, 5]  # a session with no new tokens is allowed
    tables, qs = [], []
    for length, new in zip(lengths, news, strict=True):
        table, _, _ = _filled(cache, length, 4)
        tables.append(table)
        qs.append(torch.randn(new, 4, 8, generator=cache.gen))
    starts = [0]
    for new in news:
        starts.append(starts[-1] + new)
    batched = attention(
        torch.cat(qs),
        cache.k,
        cache.v,
        torch.stack(tables),
        torch.tensor(lengths),
        query_start=torch.tensor(starts),
        split_size=16,
        window=11,
        backend=backend,
    )
    for b, (length, new) in enumerate(zip(lengths, news, strict=True)):
        if new:
            alone = attention(qs[b], cache.k, cache.v, tables[b], length, split_size=16, window=11, backend=backend)
            assert torch.equal(batched[starts[b] : starts[b + 1]], alone), f"session {b} differs inside the batch"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_decode_batch_invariance_bitwise(backend, dtype):
    cache = Cache(1, 8, dtype, max_blocks=10, seed=3)
    table0, _, _ = _filled(cache, 33, 2)
    q0 = torch.randn(1, 2, 8, generator=cache.gen).to(dtype)
    alone = attention(q0, cache.k, cache.v, table0, 33, split_size=16, backend=backend)
    others = [(*_filled(cache, 5 + 2 * i, 2)[:1], 5 + 2 * i) for i in range(4)]
    for size in range(2, 17):
        at = size % 3
        rows = [torch.randn(1, 2, 8, generator=cache.gen).to(dtype) for _ in range(size)]
        tables = [others[i % 4][0] for i in range(size)]
        lengths = [others[i % 4][1] for i in range(size)]
        rows.insert(at, q0)
        tables.insert(at, table0)
        lengths.insert(at, 33)
        got = attention(
            torch.cat(rows),
            cache.k,
            cache.v,
            torch.stack(tables),
            torch.tensor(lengths),
            query_start=torch.arange(size + 2),
            split_size=16,
            backend=backend,
        )
        assert torch.equal(got[at], alone[0]), f"decode row differs inside a batch of {size} others"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("window", "chunk"), [(None, 6), (13, 6), (None, 5)])
def test_chunked_prefill_equals_one_pass_bitwise(backend, dtype, window, chunk):
    # One 200 ms tick appends a few tokens; the same sequence must give the same bits however it arrived.
    cache = Cache(2, 8, dtype, max_blocks=14, seed=7)
    length = 50
    k, v = cache.tokens(length)
    q = torch.randn(length, 4, 8, generator=cache.gen).to(dtype)
    one_table, _, _ = cache.new_session()
    kv_cache_write(cache.k, cache.v, one_table, 0, k, v)
    one_pass = attention(q, cache.k, cache.v, one_table, length, split_size=16, window=window, backend=backend)
    chunk_table, _, _ = cache.new_session()
    parts = []
    for start in range(0, length, chunk):
        end = min(start + chunk, length)
        kv_cache_write(cache.k, cache.v, chunk_table, start, k[start:end], v[start:end])
        parts.append(
            attention(q[start:end], cache.k, cache.v, chunk_table, end, split_size=16, window=window, backend=backend)
        )
    assert torch.equal(torch.cat(parts), one_pass)
    torch.testing.assert_close(one_pass.double(), _naive(q, k, v, 0, window), atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window", [None, 20])
def test_several_key_tiles_per_split(backend, window, monkeypatch):
    # Small tiles (reference) and splits of two 64-key tiles (Triton) exercise the fold inside a split.
    monkeypatch.setattr(split_kv_module, "_REF_TILE_MAX", 16)
    cache = Cache(1, 16, torch.float32, max_blocks=38, seed=11, num_blocks=80)
    length, split = 150, 128
    k, v = cache.tokens(length)
    q = torch.randn(length, 2, 16, generator=cache.gen)
    one_table, _, _ = cache.new_session()
    kv_cache_write(cache.k, cache.v, one_table, 0, k, v)
    one_pass = attention(q, cache.k, cache.v, one_table, length, split_size=split, window=window, backend=backend)
    torch.testing.assert_close(one_pass.double(), _naive(q, k, v, 0, window), atol=2e-5, rtol=2e-5)
    chunk_table, _, _ = cache.new_session()
    parts = []
    for start in range(0, length, 37):
        end = min(start + 37, length)
        kv_cache_write(cache.k, cache.v, chunk_table, start, k[start:end], v[start:end])
        parts.append(attention(q[start:end], cache.k, cache.v, chunk_table, end, split_size=split, window=window,
                               backend=backend))  # fmt: skip
    assert torch.equal(torch.cat(parts), one_pass)


def test_decode_split_default_is_a_valid_split():
    assert DECODE_SPLIT_SIZE % 16 == 0


def _good():
    cache = Cache(2, 8, torch.float32, max_blocks=4)
    table, _, _ = _filled(cache, 10, 4)
    q = torch.randn(2, 4, 8, generator=cache.gen)
    return dict(q=q, k_cache=cache.k, v_cache=cache.v, block_table=table, seq_lens=10)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(q=torch.zeros(2, 3, 8)), r"q: expected a number of heads Hq that is a multiple of the KV heads Hkv=2"),
        (dict(q=torch.zeros(2, 4, 9)), r"k_cache: expected shape \[num_blocks, block_size, Hkv, Dh=9\]"),
        (dict(q=torch.zeros(2, 4, 8, dtype=torch.float16)), "k_cache: expected dtype torch.float16"),
        (dict(q=torch.zeros(2, 32)), r"q: expected a 3-d tensor of shape \[N, Hq, Dh\]"),
        (dict(block_table=torch.zeros(4)), "block_table: expected dtype in"),
        (dict(seq_lens=17), r"seq_lens: expected seq_lens\[0\] between .* capacity 16 .* got 17"),
        (dict(seq_lens=1), r"seq_lens: expected seq_lens\[0\] between the session's 2 new tokens"),
        (dict(split_size=24), "split_size: expected a multiple of 16, got 24"),
        (dict(split_size=0), "split_size: expected a positive int"),
        (dict(window=0), "window: expected a positive int or None"),
        (dict(window=4, causal=False), "window: a sliding window needs causal=True"),
        (dict(block_table=torch.zeros(2, 4, dtype=torch.int32), seq_lens=[10, 10]), "query_start: required"),
        (
            dict(block_table=torch.tensor([0, 1, 99, 3])),
            r"block_table: expected the used entries .* \[0, num_blocks=64\)",
        ),
        (dict(query_start=[0, 3]), r"query_start: expected non-decreasing offsets from 0 to N=2"),
        (dict(seq_lens=2.5), "seq_lens: expected an int tensor, an int or a list of ints"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(change, message, backend):
    args = {**_good(), **change}
    with pytest.raises(KernelInputError, match=message):
        attention(**args, backend=backend)


def test_kv_cache_write_rejects_overflow_and_mismatched_shapes():
    cache = Cache(2, 8, torch.float32, max_blocks=2)
    table, _, _ = cache.new_session()
    k, v = cache.tokens(3)
    with pytest.raises(KernelInputError, match="do not fit the block table's capacity 8"):
        kv_cache_write(cache.k, cache.v, table, 6, k, v)
    with pytest.raises(KernelInputError, match=r"v: expected shape \[T=3, Hkv=2, Dh=8\]"):
        kv_cache_write(cache.k, cache.v, table, 0, k, v[:2])
