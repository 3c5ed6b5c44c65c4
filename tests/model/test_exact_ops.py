"""The exact path's lean ops: a row alone gives the same bits as the same row inside a batch (torch.equal)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from model_streams import one_thread

from microturn.model import exact_ops as xo

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("rows", [1, 5, 16, 37])
def test_linear_and_rms_norm_rows_are_batch_invariant(rows):
    g = _gen(rows)
    x = torch.randn(rows, 96, generator=g)
    w = torch.randn(192, 96, generator=g)
    nw = torch.randn(96, generator=g)
    full, norm = xo.linear(x, w.t()), xo.rms_norm(x, nw, 1e-6)
    for i in range(rows):
        assert torch.equal(xo.linear(x[i:i + 1].clone(), w.t()), full[i:i + 1])
        assert torch.equal(xo.rms_norm(x[i:i + 1].clone(), nw, 1e-6), norm[i:i + 1])
    torch.testing.assert_close(full, x @ w.t(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm, x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * nw)


def test_exp_is_elementwise_deterministic_and_accurate():
    x = torch.linspace(-90, 90, 1001)
    got = xo.exp(x)
    for n in (1, 3, 7, 8, 15, 33):  # every length puts a different element in the vector loop's tail
        assert torch.equal(xo.exp(x[:n].clone()), got[:n])
        assert torch.equal(xo.exp(x[-n:].clone()), got[-n:])
    inside = (x > -80) & (x < 80)
    torch.testing.assert_close(got[inside], torch.exp(x[inside]), rtol=3e-7, atol=0)
    assert float(xo.exp(torch.tensor([float("-inf")]))) < 1e-37
    torch.testing.assert_close(xo.silu(x), torch.nn.functional.silu(x), rtol=1e-6, atol=1e-6)


def test_moe_token_alone_equals_token_in_a_batch():
    g = _gen(1)
    e, d, f = 8, 96, 96
    router = torch.randn(e, d, generator=g)
    wgu, wd = torch.randn(e, 2 * f, d, generator=g) * 0.1, torch.randn(e, d, f, generator=g) * 0.1
    x = torch.randn(23, d, generator=g)
    full = xo.moe(x, router, wgu, wd, 2)
    for i in range(x.shape[0]):
        assert torch.equal(xo.moe(x[i:i + 1].clone(), router, wgu, wd, 2), full[i:i + 1])
    # against the plain formula
    top_v, top_i = torch.topk(x @ router.t(), 2)
    w = torch.softmax(top_v, -1)
    ref = torch.zeros_like(x)
    for j in range(2):
        h = torch.einsum("nd,nfd->nf", x, wgu[top_i[:, j]])
        ref += w[:, j, None] * torch.einsum("nf,ndf->nd", torch.nn.functional.silu(h[:, :f]) * h[:, f:], wd[top_i[:, j]])
    torch.testing.assert_close(full, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("window", [48, None])
def test_attention_row_by_row_equals_one_chunk_and_the_plain_formula(window):
    g = _gen(2)
    hq, hkv, dh, bs, n_blocks = 4, 2, 24, 16, 8
    length = 100
    k_cache = torch.zeros(n_blocks, bs, hkv, dh)
    v_cache = torch.zeros(n_blocks, bs, hkv, dh)
    table = torch.randperm(n_blocks, generator=g).to(torch.int32)  # a scrambled page table
    k, v = torch.randn(length, hkv, dh, generator=g), torch.randn(length, hkv, dh, generator=g)
    xo.kv_write(k_cache, v_cache, table, 0, k, v)
    q = torch.randn(length, hq, dh, generator=g)
    scale = dh**-0.5
    whole = xo.window_attention(q, k_cache, v_cache, table, 0, window, scale)
    for start in (0, 1, 30, 47, 48, 99):  # inside and past the first window
        one = xo.window_attention(q[start:start + 1].clone(), k_cache, v_cache, table, start, window, scale)
        assert torch.equal(one, whole[start:start + 1])
    chunk = xo.window_attention(q[40:57].clone(), k_cache, v_cache, table, 40, window, scale)
    assert torch.equal(chunk, whole[40:57])
    i = torch.arange(length)
    mask = i[None, :] <= i[:, None]
    if window is not None:
        mask &= i[None, :] > i[:, None] - window
    kk, vv = k.repeat_interleave(hq // hkv, 1), v.repeat_interleave(hq // hkv, 1)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), kk.transpose(0, 1), vv.transpose(0, 1), attn_mask=mask).transpose(0, 1)
    torch.testing.assert_close(whole, ref, rtol=1e-5, atol=1e-5)
