"""Triton split-KV attention kernels; imported only when the Triton backend is first used.

The partial kernel runs one program per (session, block of 16 absolute positions holding some of its new
tokens, KV head, split). The rows of its dots are (token, query head of the KV group) pairs, and the token at
absolute position p always sits in row block p // 16 at row (p % 16) * GROUP_PAD + g, however the sequence was
chunked; keys stream in tiles aligned to absolute multiples of the tile size, and each row's online softmax is
masked to that row's own key range. A row's bits therefore do not depend on which other tokens share its block:
tiles outside its range are exact no-ops (weight 1 for the state, 0 for the tile) and a dot's rows never mix.
The merge kernel then folds each row's splits left to right.

Why absolute row blocks and not blocks counted from the chunk's first token: a dot's per-element arithmetic may
depend on where the element sits in the tile. Under TRITON_INTERPRET=1, tl.dot is numpy.matmul, i.e. OpenBLAS
sgemm, whose Haswell kernels sum some rows' products in one FMA chain and others in two interleaved chains
(docs/decisions.md, "Interpreter dots depend on the row's place in the tile"); a token at row 3 of one launch
and row 9 of another then differs in the last bit. With the row fixed by the position, both launches run the
same tile shape with the token in the same row, so they get the same bits on any dot.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_TOKENS = 16  # fixed, never chosen from the batch
NUM_STAGES = 3  # software-pipelining depth of the partial kernel's key loop (Triton's default on CUDA)


def launch_config(group: int, split_size: int) -> tuple[int, int]:
    """(key tile, warps) for a KV group size and split: model constants only, so never a function of the batch.

    The tile is the largest power of two dividing the split (tiles never straddle a split), capped so the
    [16 * group, head_dim] accumulator and the key tile fit in registers (sm_90 build, head_dim 128: no spills).
    Up to 64 rows (GQA groups up to 4) run on 4 warps: on an H100 (bf16, Hq=32, Hkv=8, Dh=128, split 512)
    8 warps made decode 1.75x slower (B=16, L=4096: 0.202 ms vs 0.118 ms as graph replays; docs/gpu_figures.md).
    """
    rows = BLOCK_TOKENS * triton.next_power_of_2(group)
    block_n = min(64 if rows <= 128 else 32, split_size & -split_size)
    return block_n, 4 if rows <= 64 else 8


@triton.jit(do_not_specialize=["window", "num_splits", "num_tokens"])
def _split_partial_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, qs_ptr, o_ptr, ml_ptr, range_ptr,
    scale, window, num_splits, num_tokens, blocks_per_session,
    stride_qn, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_btb,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, DH_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    kvh = tl.program_id(1)
    s = tl.program_id(2)
    b = pid // blocks_per_session
    first_tok = tl.load(qs_ptr + b)
    end_tok = tl.load(qs_ptr + b + 1)
    length = tl.load(lens_ptr + b)
    first_pos = length - (end_tok - first_tok)  # absolute position of the session's first new token
    # Row 0 of this block sits at an absolute multiple of BLOCK_M, so a token's row depends on its position only.
    pos0 = (first_pos // BLOCK_M + pid % blocks_per_session) * BLOCK_M
    if (pos0 >= length) | (first_tok >= end_tok):
        return
    t0 = first_tok + (pos0 - first_pos)  # token index of row 0; below first_tok in a chunk's first block

    r = tl.arange(0, BLOCK_M * GROUP_PAD)
    tok_off = r // GROUP_PAD
    g = r % GROUP_PAD
    tok = t0 + tok_off
    row_ok = (tok >= first_tok) & (tok < end_tok) & (g < GROUP)
    pos = pos0 + tok_off
    if CAUSAL:
        key_end = pos + 1
    else:
        key_end = tl.zeros_like(pos) + length
    if HAS_WINDOW:
        key_start = tl.maximum(pos - window + 1, 0)
    else:
        key_start = tl.zeros_like(pos)
    if (kvh == 0) & (s == 0):
        # The merge reads only the splits each token's keys touch; record that range once per token.
        first_row = row_ok & (g == 0)
        tl.store(range_ptr + tok * 2, key_start // SPLIT, mask=first_row)
        tl.store(range_ptr + tok * 2 + 1, (key_end - 1) // SPLIT, mask=first_row)

    split_lo = s * SPLIT
    lo_r = tl.maximum(key_start, split_lo)
    hi_r = tl.minimum(key_end, split_lo + SPLIT)
    first_row_pos = tl.maximum(pos0, first_pos)  # positions of the block's first and last valid tokens
    last_row_pos = tl.minimum(pos0 + BLOCK_M, length) - 1
    lo = split_lo
    if HAS_WINDOW:
        lo = tl.maximum(split_lo, first_row_pos - window + 1)
    if CAUSAL:
        hi = tl.minimum(split_lo + SPLIT, last_row_pos + 1)
    else:
        hi = tl.minimum(split_lo + SPLIT, length)
    if lo >= hi:
        return

    d = tl.arange(0, DH_PAD)
    d_mask = d < HEAD_DIM
    heads = kvh * GROUP + g
    q = tl.load(
        q_ptr + tok.to(tl.int64)[:, None] * stride_qn + heads[:, None] * stride_qh + d[None, :],
        mask=row_ok[:, None] & d_mask[None, :],
        other=0.0,
    )
    m_i = tl.full([BLOCK_M * GROUP_PAD], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M * GROUP_PAD], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M * GROUP_PAD, DH_PAD], dtype=tl.float32)
    for start in range((lo // BLOCK_N) * BLOCK_N, hi, BLOCK_N):
        j = start + tl.arange(0, BLOCK_N)
        in_block = (j >= lo) & (j < hi)
        phys = tl.load(bt_ptr + b.to(tl.int64) * stride_btb + j // BLOCK_SIZE, mask=in_block, other=0).to(tl.int64)
        off = j % BLOCK_SIZE
        kv_mask = in_block[:, None] & d_mask[None, :]
        k = tl.load(k_ptr + phys[:, None] * stride_kb + off[:, None] * stride_ks + kvh * stride_kh + d[None, :],
                    mask=kv_mask, other=0.0)  # fmt: skip
        v = tl.load(v_ptr + phys[:, None] * stride_vb + off[:, None] * stride_vs + kvh * stride_vh + d[None, :],
                    mask=kv_mask, other=0.0)  # fmt: skip
        if IEEE:
            scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        else:
            scores = tl.dot(q, tl.trans(k)) * scale
        valid = (j[None, :] >= lo_r[:, None]) & (j[None, :] < hi_r[:, None]) & row_ok[:, None]
        scores = tl.where(valid, scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        # A tile with nothing for this row must leave its state bit for bit: weight exactly 1, not exp(0).
        alpha = tl.where(m_i == m_new, 1.0, tl.exp(m_i - m_safe))
        prob = tl.exp(scores - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(prob, axis=1)
        if IEEE:
            pv = tl.dot(prob, v.to(tl.float32), input_precision="ieee")
        else:
            pv = tl.dot(prob.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    row = (tok.to(tl.int64) * (GROUP * tl.num_programs(1)) + heads) * num_splits + s  # [N, Hq, splits] index
    tl.store(o_ptr + row[:, None] * HEAD_DIM + d[None, :], acc, mask=row_ok[:, None] & d_mask[None, :])
    tl.store(ml_ptr + row * 2, m_i, mask=row_ok)
    tl.store(ml_ptr + row * 2 + 1, l_i, mask=row_ok)


@triton.jit(do_not_specialize=["num_splits"])
def _merge_kernel(
    o_ptr, ml_ptr, range_ptr, out_ptr, num_splits, num_heads,
    stride_on, stride_oh,
    HEAD_DIM: tl.constexpr, DH_PAD: tl.constexpr,
):  # fmt: skip
    # One program per (token, query head): the row's splits, strictly left to right.
    n = tl.program_id(0)
    h = tl.program_id(1)
    first = tl.load(range_ptr + n * 2)
    last = tl.load(range_ptr + n * 2 + 1)
    d = tl.arange(0, DH_PAD)
    d_mask = d < HEAD_DIM
    row0 = (n.to(tl.int64) * num_heads + h) * num_splits
    zero = tl.zeros([1], dtype=tl.int32)
    m = tl.full([1], float("-inf"), dtype=tl.float32)
    l_sum = tl.zeros([1], dtype=tl.float32)
    acc = tl.zeros([DH_PAD], dtype=tl.float32)
    for s in range(first, last + 1):
        row = row0 + s
        m_s = tl.load(ml_ptr + row * 2 + zero)
        l_s = tl.load(ml_ptr + row * 2 + 1 + zero)
        o_s = tl.load(o_ptr + row * HEAD_DIM + d, mask=d_mask, other=0.0)
        m_new = tl.maximum(m, m_s)  # every split in [first, last] holds at least one key, so m_new is finite
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
    query_start: torch.Tensor,
    *,
    scale: float,
    causal: bool,
    window: int | None,
    split_size: int,
) -> torch.Tensor:
    """Launch the partial and merge kernels on validated arguments; nothing is read back from the device."""
    n, hq, dh = q.shape
    _, block_size, hkv, _ = k_cache.shape
    sessions = block_table.shape[0]
    if n == 0:
        return torch.empty_like(q)
    q = q if q.stride(2) == 1 else q.contiguous()
    k_cache = k_cache if k_cache.stride(3) == 1 else k_cache.contiguous()
    v_cache = v_cache if v_cache.stride(3) == 1 else v_cache.contiguous()
    block_table = block_table if block_table.stride(1) == 1 else block_table.contiguous()
    group = hq // hkv
    # The grid comes from host-known bounds (capacity, N) so no length is read back; spare programs exit at once.
    # n_b <= N new tokens at any offset span at most (n_b + 14) // 16 + 1 absolute 16-position blocks.
    num_splits = triton.cdiv(block_table.shape[1] * block_size, split_size)
    blocks_per_session = (n + BLOCK_TOKENS - 2) // BLOCK_TOKENS + 1
    block_n, num_warps = launch_config(group, split_size)
    o_part = torch.empty(n, hq, num_splits, dh, dtype=torch.float32, device=q.device)
    ml_part = torch.empty(n, hq, num_splits, 2, dtype=torch.float32, device=q.device)
    split_range = torch.empty(n, 2, dtype=torch.int32, device=q.device)
    dh_pad = max(16, triton.next_power_of_2(dh))
    _split_partial_kernel[(sessions * blocks_per_session, hkv, num_splits)](
        q, k_cache, v_cache, block_table, seq_lens, query_start, o_part, ml_part, split_range,
        scale, window or 0, num_splits, n, blocks_per_session,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_table.stride(0),
        GROUP=group, GROUP_PAD=triton.next_power_of_2(group), HEAD_DIM=dh, DH_PAD=dh_pad,
        BLOCK_SIZE=block_size, SPLIT=split_size, BLOCK_M=BLOCK_TOKENS, BLOCK_N=block_n,
        CAUSAL=causal, HAS_WINDOW=window is not None, IEEE=q.dtype == torch.float32, num_warps=num_warps,
        num_stages=NUM_STAGES,
    )  # fmt: skip
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    _merge_kernel[(n, hq)](
        o_part, ml_part, split_range, out, num_splits, hq, out.stride(0), out.stride(1),
        HEAD_DIM=dh, DH_PAD=dh_pad,
    )  # fmt: skip
    return out
