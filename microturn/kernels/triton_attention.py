"""Triton split-KV attention kernels; imported only when the Triton backend is first used."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Keys are visited in tiles aligned to absolute multiples of the tile size, which divides every split
# (split sizes are multiples of SPLIT_ALIGN = 16), so a row's tile sequence depends on its position only.
_MAX_BLOCK_N = 64


@triton.jit
def _split_partial_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    bt_ptr,
    lens_ptr,
    tok_seq_ptr,
    tok_pos_ptr,
    o_ptr,
    ml_ptr,
    scale,
    window,
    num_splits,
    stride_qn,
    stride_qh,
    stride_kb,
    stride_ks,
    stride_kh,
    stride_vb,
    stride_vs,
    stride_vh,
    stride_btb,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    DH_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    IEEE: tl.constexpr,
):
    # One program per (token, KV head, split): the GROUP query heads sharing the KV head are the rows of the
    # dots, keys stream in tiles, and an online softmax keeps (max, sum, acc) for this split only.
    n = tl.program_id(0)
    kvh = tl.program_id(1)
    s = tl.program_id(2)
    b = tl.load(tok_seq_ptr + n)
    p = tl.load(tok_pos_ptr + n)
    lo = s * SPLIT
    hi = lo + SPLIT
    if CAUSAL:
        hi = tl.minimum(hi, p + 1)
    else:
        hi = tl.minimum(hi, tl.load(lens_ptr + b))
    if HAS_WINDOW:
        lo = tl.maximum(lo, p - window + 1)
    if lo >= hi:
        return  # the merge never reads splits outside the row's key range
    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, DH_PAD)
    g_mask = g < GROUP
    d_mask = d < HEAD_DIM
    heads = kvh * GROUP + g
    q = tl.load(
        q_ptr + n.to(tl.int64) * stride_qn + heads[:, None] * stride_qh + d[None, :],
        mask=g_mask[:, None] & d_mask[None, :],
        other=0.0,
    )
    m_i = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([GROUP_PAD, DH_PAD], dtype=tl.float32)
    for start in range((lo // BLOCK_N) * BLOCK_N, hi, BLOCK_N):
        j = start + tl.arange(0, BLOCK_N)
        valid = (j >= lo) & (j < hi)
        phys = tl.load(bt_ptr + b.to(tl.int64) * stride_btb + j // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        off = j % BLOCK_SIZE
        kv_mask = valid[:, None] & d_mask[None, :]
        k = tl.load(
            k_ptr + phys[:, None] * stride_kb + off[:, None] * stride_ks + kvh * stride_kh + d[None, :],
            mask=kv_mask,
            other=0.0,
        )
        v = tl.load(
            v_ptr + phys[:, None] * stride_vb + off[:, None] * stride_vs + kvh * stride_vh + d[None, :],
            mask=kv_mask,
            other=0.0,
        )
        if IEEE:
            scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        else:
            scores = tl.dot(q, tl.trans(k)) * scale
        scores = tl.where(valid[None, :], scores, float("-inf"))
        # Every tile holds at least one valid key, so m_new is finite and exp(-inf) gives the masked zeros.
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        alpha = tl.exp(m_i - m_new)
        prob = tl.exp(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(prob, axis=1)
        if IEEE:
            pv = tl.dot(prob, v.to(tl.float32), input_precision="ieee")
        else:
            pv = tl.dot(prob.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    row = (n.to(tl.int64) * (GROUP * tl.num_programs(1)) + heads) * num_splits + s  # [N, Hq, splits] index
    tl.store(o_ptr + row[:, None] * HEAD_DIM + d[None, :], acc, mask=g_mask[:, None] & d_mask[None, :])
    tl.store(ml_ptr + row * 2, m_i, mask=g_mask)
    tl.store(ml_ptr + row * 2 + 1, l_i, mask=g_mask)


@triton.jit
def _merge_kernel(
    o_ptr,
    ml_ptr,
    out_ptr,
    tok_pos_ptr,
    lens_ptr,
    tok_seq_ptr,
    window,
    num_splits,
    num_heads,
    stride_on,
    stride_oh,
    HEAD_DIM: tl.constexpr,
    DH_PAD: tl.constexpr,
    SPLIT: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
):
    # One program per (token, query head): the row's splits, strictly left to right.
    n = tl.program_id(0)
    h = tl.program_id(1)
    p = tl.load(tok_pos_ptr + n)
    if CAUSAL:
        last = p // SPLIT
    else:
        last = (tl.load(lens_ptr + tl.load(tok_seq_ptr + n)) - 1) // SPLIT
    first = 0
    if HAS_WINDOW:
        first = tl.maximum(p - window + 1, 0) // SPLIT
    d = tl.arange(0, DH_PAD)
    d_mask = d < HEAD_DIM
    row0 = (n.to(tl.int64) * num_heads + h) * num_splits
    m = tl.full([1], float("-inf"), dtype=tl.float32)
    l_sum = tl.zeros([1], dtype=tl.float32)
    acc = tl.zeros([DH_PAD], dtype=tl.float32)
    for s in range(first, last + 1):
        row = row0 + s
        m_s = tl.load(ml_ptr + row * 2 + tl.zeros([1], dtype=tl.int32))
        l_s = tl.load(ml_ptr + row * 2 + 1 + tl.zeros([1], dtype=tl.int32))
        o_s = tl.load(o_ptr + row * HEAD_DIM + d, mask=d_mask, other=0.0)
        m_new = tl.maximum(m, m_s)
        alpha = tl.where(m == float("-inf"), 0.0, tl.exp(m - m_new))
        beta = tl.exp(m_s - m_new)
        acc = acc * alpha + o_s * beta
        l_sum = l_sum * alpha + l_s * beta
        m = m_new
    out = acc / l_sum
    tl.store(out_ptr + n.to(tl.int64) * stride_on + h * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d_mask)


def split_kv_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    tok_seq: torch.Tensor,
    tok_pos: torch.Tensor,
    *,
    scale: float,
    causal: bool,
    window: int | None,
    split_size: int,
) -> torch.Tensor:
    """Launch the partial and merge kernels on validated arguments and per-token (session, position)."""
    n, hq, dh = q.shape
    _, block_size, hkv, _ = k_cache.shape
    out = torch.empty_like(q)
    if n == 0:
        return out
    if q.stride(2) != 1:
        q = q.contiguous()
    if k_cache.stride(3) != 1:
        k_cache = k_cache.contiguous()
    if v_cache.stride(3) != 1:
        v_cache = v_cache.contiguous()
    if block_table.stride(1) != 1:
        block_table = block_table.contiguous()
    group = hq // hkv
    num_splits = triton.cdiv(block_table.shape[1] * block_size, split_size)
    block_n = min(_MAX_BLOCK_N, split_size & -split_size)  # the largest power of two dividing the split
    o_part = torch.empty(n, hq, num_splits, dh, dtype=torch.float32, device=q.device)
    ml_part = torch.empty(n, hq, num_splits, 2, dtype=torch.float32, device=q.device)
    dh_pad = max(16, triton.next_power_of_2(dh))
    ieee = q.dtype == torch.float32
    win = window or 0
    _split_partial_kernel[(n, hkv, num_splits)](
        q,
        k_cache,
        v_cache,
        block_table,
        seq_lens,
        tok_seq,
        tok_pos,
        o_part,
        ml_part,
        scale,
        win,
        num_splits,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        block_table.stride(0),
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=dh,
        DH_PAD=dh_pad,
        BLOCK_SIZE=block_size,
        SPLIT=split_size,
        BLOCK_N=block_n,
        CAUSAL=causal,
        HAS_WINDOW=window is not None,
        IEEE=ieee,
    )
    out_c = out if out.stride(2) == 1 else torch.empty_like(q).contiguous()
    _merge_kernel[(n, hq)](
        o_part,
        ml_part,
        out_c,
        tok_pos,
        seq_lens,
        tok_seq,
        win,
        num_splits,
        hq,
        out_c.stride(0),
        out_c.stride(1),
        HEAD_DIM=dh,
        DH_PAD=dh_pad,
        SPLIT=split_size,
        CAUSAL=causal,
        HAS_WINDOW=window is not None,
    )
    return out_c
