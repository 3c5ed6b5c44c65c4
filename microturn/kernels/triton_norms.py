"""Triton RMSNorm kernel; imported only when the Triton backend is first used (see `norms.py`)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# A fixed tile per row length: the reduction order depends on D alone, never on the number of rows.
_MAX_BLOCK_D = 1024


@triton.jit
def _rms_norm_kernel(x_ptr, w_ptr, y_ptr, D, stride_x, stride_y, eps, HAS_WEIGHT: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for start in range(0, D, BLOCK_D):
        offs = start + tl.arange(0, BLOCK_D)
        xv = tl.load(x_ptr + row * stride_x + offs, mask=offs < D, other=0.0).to(tl.float32)
        acc += xv * xv
    inv_rms = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / D + eps)
    for start in range(0, D, BLOCK_D):
        offs = start + tl.arange(0, BLOCK_D)
        mask = offs < D
        y = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32) * inv_rms
        if HAS_WEIGHT:
            y = y * tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * stride_y + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Launch the kernel on validated arguments."""
    d = x.shape[-1]
    x2 = x.reshape(-1, d)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    if x2.shape[0] == 0 or d == 0:
        return y.reshape(x.shape)
    w = weight.contiguous() if weight is not None else x2  # any valid pointer when unused
    block = min(triton.next_power_of_2(d), _MAX_BLOCK_D)
    _rms_norm_kernel[(x2.shape[0],)](
        x2, w, y, d, x2.stride(0), y.stride(0), eps, HAS_WEIGHT=weight is not None, BLOCK_D=block
    )
    return y.reshape(x.shape)
