"""Building blocks that make the torch references batch-invariant and chunking-invariant on purpose.

Two facts of torch on the CPU drive this module:

* A matmul's reduction order depends on its shape (one row takes the GEMV path, many rows a GEMM path), so a
  row's bits depend on how many rows share the call. Every GEMM here therefore runs on blocks of exactly
  ``ROW_BLOCK`` rows, copied into fresh (hence equally aligned) zero-padded buffers; a row then gets the same
  bits wherever it sits in whichever batch.
* Elementwise transcendentals (exp, sigmoid, silu, exp2) use a vectorised formula for most elements and a
  scalar libm call for the tail of the tensor, and the two disagree in the last bit; where the tail falls
  depends on the batch. So `det_exp` builds exp from +, -, *, / and exact bit manipulation only, which are
  correctly rounded on both paths; torch's reductions are likewise replaced by an explicit pairwise tree.
"""

from __future__ import annotations

import torch

__all__ = ["ROW_BLOCK", "blocked_mm", "det_exp", "det_silu", "tree_sum"]

ROW_BLOCK = 16

# Cephes expf: ln 2 split so that n * _LN2_HI is exact for |n| < 2**15, and its minimax polynomial.
_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375
_LN2_LO = -2.12194440e-4
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


def det_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) in float32 (within ~2 ulp) whose bits depend only on each element's own value.

    Returns 0 for x = -inf (so masked scores need no special case) and inf above ~88.7.
    """
    x = x.float().clamp(-104.0, 89.0)
    n = torch.floor(x * _LOG2E + 0.5)
    r = x - n * _LN2_HI
    r = r - n * _LN2_LO
    p = torch.full_like(r, _EXP_POLY[0])
    for c in _EXP_POLY[1:]:
        p = p * r + c
    y = p * (r * r) + r + 1.0
    # 2**n as two exactly representable powers of two, so n in [-150, 129] never leaves the normal range
    # before the single final rounding.
    ni = n.to(torch.int32)
    n1 = torch.div(ni, 2, rounding_mode="floor")
    n2 = ni - n1
    return y * _pow2(n1) * _pow2(n2)


def _pow2(n: torch.Tensor) -> torch.Tensor:
    return ((n + 127) << 23).view(torch.float32)


def det_silu(x: torch.Tensor) -> torch.Tensor:
    """silu(x) = x / (1 + exp(-x)) in float32, elementwise-deterministic like `det_exp`."""
    x = x.float()
    return x / (det_exp(-x) + 1.0)


def tree_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension by a fixed pairwise tree (zero-padded to a power of two), in x's dtype.

    Each row's bits depend only on that row and the dimension's length, never on the other rows.
    """
    width = x.shape[-1]
    if width == 0:
        return x.new_zeros(x.shape[:-1])
    size = 1 << (width - 1).bit_length()
    if size != width:
        x = torch.cat([x, x.new_zeros(*x.shape[:-1], size - width)], dim=-1)
    while size > 1:
        size //= 2
        x = x[..., :size] + x[..., size:]
    return x[..., 0]


def blocked_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for a 2-d ``a`` computed on fixed blocks of ``ROW_BLOCK`` rows, in a's dtype.

    Every block is copied into a fresh zero-padded ``[ROW_BLOCK, K]`` buffer so that each GEMM call has the
    same shape and alignment; a row's result is then independent of its neighbours and of the batch size.
    """
    m, k = a.shape
    out = a.new_empty(m, b.shape[1])
    for start in range(0, m, ROW_BLOCK):
        rows = min(ROW_BLOCK, m - start)
        block = a.new_zeros(ROW_BLOCK, k)
        block[:rows] = a[start : start + rows]
        out[start : start + rows] = torch.mm(block, b)[:rows]
    return out
