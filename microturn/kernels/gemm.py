"""Batch-invariant matmul: the torch reference, the Triton launcher and the dispatcher.

``matmul(a, b)`` is ``a @ b`` for ``a`` [..., K] and ``b`` [K, N] (pass ``w.t()`` for a Linear weight). Both
backends fix how each output row is reduced independently of how many rows there are: the Triton kernel uses
fixed tiles and never splits K; the reference computes blocks of exactly 16 rows (see `invariant.blocked_mm`).
"""

from __future__ import annotations

import torch

from ._validate import FLOAT_DTYPES, check_same_device, check_same_dtype, check_tensor
from .dispatch import select_backend
from .errors import KernelInputError
from .invariant import blocked_mm

__all__ = ["matmul", "matmul_reference", "matmul_triton"]


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if not isinstance(a, torch.Tensor) or a.dim() < 1:
        got = list(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise KernelInputError(f"a: expected a tensor of shape [..., K], got {got}")
    if a.dtype not in FLOAT_DTYPES:
        raise KernelInputError(f"a: expected dtype in (float16, bfloat16, float32), got {a.dtype}")
    check_tensor("b", b, ["K", "N"], {"K": a.shape[-1]}, FLOAT_DTYPES)
    check_same_dtype(["a", "b"], [a, b])
    check_same_device(["a", "b"], [a, b])


def matmul_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in torch on fixed 16-row blocks; bitwise batch-invariant."""
    _check(a, b)
    a2 = a.reshape(-1, a.shape[-1])
    return blocked_mm(a2, b).reshape(*a.shape[:-1], b.shape[1])


def matmul_triton(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with the Triton kernel (fixed tiles, no split-K, float32 accumulation)."""
    _check(a, b)
    from . import triton_gemm

    a2 = a.reshape(-1, a.shape[-1])
    return triton_gemm.matmul(a2, b).reshape(*a.shape[:-1], b.shape[1])


def matmul(a: torch.Tensor, b: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """Batch-invariant ``a @ b``: Triton for CUDA tensors, the torch reference elsewhere (``backend`` forces)."""
    tensors = [t for t in (a, b) if isinstance(t, torch.Tensor)]
    if select_backend(backend, *tensors) == "triton":
        return matmul_triton(a, b)
    return matmul_reference(a, b)
