"""Triton MoE kernels: gather + GEMV (decode) and the grouped-GEMM baseline; imported on first Triton use."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Fixed tiles: a (token, slot) pair's reduction order depends on D and F only, never on T. Sized so the sm_90
# build keeps everything in registers (gate/up ~170, down ~150 registers a thread, no spills); untuned on a GPU.
GATE_UP_TILE = (16, 256)  # (F rows, D columns) per step
DOWN_TILE = (32, 128)  # (D rows, F columns) per step
_GROUPED_BLOCK_N = 64
_GROUPED_BLOCK_K = 64


@triton.jit
def _gemv_gate_up_kernel(
    x_ptr,
    ids_ptr,
    w_ptr,
    act_ptr,
    D,
    F,
    TOPK,
    stride_xt,
    stride_it,
    stride_ij,
    stride_we,
    stride_wn,
    stride_wd,
    BLOCK_F: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program per (pair, F tile): act[pair, f] = silu(gate_e[f] . x_t) * (up_e[f] . x_t).
    pair = tl.program_id(0)
    t = pair // TOPK
    e = tl.load(ids_ptr + t * stride_it + (pair % TOPK) * stride_ij).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    f_mask = f < F
    w_base = w_ptr + e * stride_we
    acc_g = tl.zeros([BLOCK_F, BLOCK_D], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_F, BLOCK_D], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_mask = d < D
        xv = tl.load(x_ptr + t * stride_xt + d, mask=d_mask, other=0.0).to(tl.float32)
        mask = f_mask[:, None] & d_mask[None, :]
        wg = tl.load(w_base + f[:, None] * stride_wn + d[None, :] * stride_wd, mask=mask, other=0.0)
        wu = tl.load(w_base + (F + f)[:, None] * stride_wn + d[None, :] * stride_wd, mask=mask, other=0.0)
        acc_g += wg.to(tl.float32) * xv[None, :]
        acc_u += wu.to(tl.float32) * xv[None, :]
    g = tl.sum(acc_g, axis=1)
    u = tl.sum(acc_u, axis=1)
    tl.store(act_ptr + pair * F + f, g / (1.0 + tl.exp(-g)) * u, mask=f_mask)


@triton.jit
def _gemv_down_kernel(
    act_ptr,
    ids_ptr,
    w_ptr,
    y_ptr,
    D,
    F,
    TOPK,
    stride_it,
    stride_ij,
    stride_we,
    stride_wn,
    stride_wf,
    BLOCK_N: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    # One program per (pair, D tile): y[pair, n] = down_e[n] . act[pair].
    pair = tl.program_id(0)
    t = pair // TOPK
    e = tl.load(ids_ptr + t * stride_it + (pair % TOPK) * stride_ij).to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < D
    w_base = w_ptr + e * stride_we
    acc = tl.zeros([BLOCK_N, BLOCK_F], dtype=tl.float32)
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        f_mask = f < F
        a = tl.load(act_ptr + pair * F + f, mask=f_mask, other=0.0)
        w = tl.load(
            w_base + n[:, None] * stride_wn + f[None, :] * stride_wf, mask=n_mask[:, None] & f_mask[None, :], other=0.0
        )
        acc += w.to(tl.float32) * a[None, :]
    tl.store(y_ptr + pair * D + n, tl.sum(acc, axis=1), mask=n_mask)


@triton.jit
def _combine_kernel(y_ptr, w_ptr, out_ptr, D, TOPK, stride_wt, stride_wj, stride_ot, BLOCK: tl.constexpr):
    # Slots are added strictly in order 0..k-1 (no atomics), so the sum's order is fixed.
    t = tl.program_id(0)
    n = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = n < D
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for j in range(0, TOPK):
        wj = tl.load(w_ptr + t * stride_wt + j * stride_wj).to(tl.float32)
        acc += wj * tl.load(y_ptr + (t * TOPK + j) * D + n, mask=mask, other=0.0)
    tl.store(out_ptr + t * stride_ot + n, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _combine(y: torch.Tensor, topk_weights: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    t_count, k, d = y.shape
    block = min(triton.next_power_of_2(d), 1024)
    _combine_kernel[(t_count, triton.cdiv(d, block))](
        y, topk_weights, out, d, k, topk_weights.stride(0), topk_weights.stride(1), out.stride(0), BLOCK=block
    )
    return out


def moe_gemv(
    x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor
) -> torch.Tensor:
    """Gather + GEMV on validated arguments: three launches, no sort, no padding, no atomics."""
    t_count, k = topk_ids.shape
    d = x.shape[1]
    f = w_down.shape[2]
    out = torch.empty(t_count, d, dtype=x.dtype, device=x.device)
    if t_count == 0 or k == 0:
        return out.zero_()
    if x.stride(1) != 1:
        x = x.contiguous()
    pairs = t_count * k
    act = torch.empty(pairs, f, dtype=torch.float32, device=x.device)
    y = torch.empty(t_count, k, d, dtype=torch.float32, device=x.device)
    rows, cols = GATE_UP_TILE
    _gemv_gate_up_kernel[(pairs, triton.cdiv(f, rows))](
        x,
        topk_ids,
        w_gate_up,
        act,
        d,
        f,
        k,
        x.stride(0),
        topk_ids.stride(0),
        topk_ids.stride(1),
        w_gate_up.stride(0),
        w_gate_up.stride(1),
        w_gate_up.stride(2),
        BLOCK_F=rows,
        BLOCK_D=cols,
    )
    rows, cols = DOWN_TILE
    _gemv_down_kernel[(pairs, triton.cdiv(d, rows))](
        act,
        topk_ids,
        w_down,
        y,
        d,
        f,
        k,
        topk_ids.stride(0),
        topk_ids.stride(1),
        w_down.stride(0),
        w_down.stride(1),
        w_down.stride(2),
        BLOCK_N=rows,
        BLOCK_F=cols,
    )
    return _combine(y, topk_weights, out)


@triton.jit
def _grouped_gate_up_kernel(
    x_ptr,
    sorted_ptr,
    bexp_ptr,
    npad_ptr,
    w_ptr,
    act_ptr,
    D,
    F,
    PAIRS,
    TOPK,
    stride_xt,
    stride_xd,
    stride_we,
    stride_wn,
    stride_wd,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IEEE: tl.constexpr,
):
    blk = tl.program_id(0)
    if blk * BLOCK_M >= tl.load(npad_ptr):
        return
    e = tl.load(bexp_ptr + blk).to(tl.int64)
    rows = tl.load(sorted_ptr + blk * BLOCK_M + tl.arange(0, BLOCK_M))
    r_mask = rows < PAIRS
    tok = (rows // TOPK).to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < F
    w_base = w_ptr + e * stride_we
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        k_mask = kk < D
        a = tl.load(
            x_ptr + tok[:, None] * stride_xt + kk[None, :] * stride_xd,
            mask=r_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        w_mask = k_mask[:, None] & n_mask[None, :]
        wg = tl.load(w_base + n[None, :] * stride_wn + kk[:, None] * stride_wd, mask=w_mask, other=0.0)
        wu = tl.load(w_base + (F + n)[None, :] * stride_wn + kk[:, None] * stride_wd, mask=w_mask, other=0.0)
        if IEEE:
            acc_g = tl.dot(a, wg, acc_g, input_precision="ieee")
            acc_u = tl.dot(a, wu, acc_u, input_precision="ieee")
        else:
            acc_g = tl.dot(a, wg, acc_g)
            acc_u = tl.dot(a, wu, acc_u)
    act = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
    tl.store(
        act_ptr + rows[:, None].to(tl.int64) * F + n[None, :],
        act.to(act_ptr.dtype.element_ty),
        mask=r_mask[:, None] & n_mask[None, :],
    )


@triton.jit
def _grouped_down_kernel(
    act_ptr,
    sorted_ptr,
    bexp_ptr,
    npad_ptr,
    w_ptr,
    y_ptr,
    D,
    F,
    PAIRS,
    stride_we,
    stride_wn,
    stride_wf,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    IEEE: tl.constexpr,
):
    blk = tl.program_id(0)
    if blk * BLOCK_M >= tl.load(npad_ptr):
        return
    e = tl.load(bexp_ptr + blk).to(tl.int64)
    rows = tl.load(sorted_ptr + blk * BLOCK_M + tl.arange(0, BLOCK_M))
    r_mask = rows < PAIRS
    rows64 = rows.to(tl.int64)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n < D
    w_base = w_ptr + e * stride_we
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, F, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        k_mask = kk < F
        a = tl.load(act_ptr + rows64[:, None] * F + kk[None, :], mask=r_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(
            w_base + n[None, :] * stride_wn + kk[:, None] * stride_wf, mask=k_mask[:, None] & n_mask[None, :], other=0.0
        )
        if IEEE:
            acc = tl.dot(a, w, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w, acc)
    tl.store(y_ptr + rows64[:, None] * D + n[None, :], acc, mask=r_mask[:, None] & n_mask[None, :])


def moe_grouped_gemm(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    aligned: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    block_m: int,
) -> torch.Tensor:
    """Grouped-GEMM baseline on validated arguments and a `moe_align_block_size` result."""
    t_count, k = topk_ids.shape
    d = x.shape[1]
    f = w_down.shape[2]
    out = torch.empty(t_count, d, dtype=x.dtype, device=x.device)
    if t_count == 0 or k == 0:
        return out.zero_()
    sorted_pairs, block_experts, num_padded = aligned
    pairs = t_count * k
    act = torch.empty(pairs, f, dtype=x.dtype, device=x.device)
    y = torch.empty(t_count, k, d, dtype=torch.float32, device=x.device)
    ieee = x.dtype == torch.float32
    blocks = block_experts.numel()
    bn, bk = _GROUPED_BLOCK_N, _GROUPED_BLOCK_K
    _grouped_gate_up_kernel[(blocks, triton.cdiv(f, bn))](
        x,
        sorted_pairs,
        block_experts,
        num_padded,
        w_gate_up,
        act,
        d,
        f,
        pairs,
        k,
        x.stride(0),
        x.stride(1),
        w_gate_up.stride(0),
        w_gate_up.stride(1),
        w_gate_up.stride(2),
        BLOCK_M=block_m,
        BLOCK_N=bn,
        BLOCK_K=bk,
        IEEE=ieee,
    )
    _grouped_down_kernel[(blocks, triton.cdiv(d, bn))](
        act,
        sorted_pairs,
        block_experts,
        num_padded,
        w_down,
        y,
        d,
        f,
        pairs,
        w_down.stride(0),
        w_down.stride(1),
        w_down.stride(2),
        BLOCK_M=block_m,
        BLOCK_N=bn,
        BLOCK_K=bk,
        IEEE=ieee,
    )
    return _combine(y, topk_weights, out)
