"""Batch-invariant RMSNorm: the torch reference, the Triton launcher and the dispatcher.

y = x / sqrt(mean(x**2) + eps) * weight, computed in float32 and cast back to x's dtype. The Triton kernel
(`triton_norms.py`) runs one program per row over fixed tiles; the reference reduces each row by a fixed
pairwise tree. Either way a row's bits never depend on the other rows.
"""

from __future__ import annotations

import torch

from ._validate import FLOAT_DTYPES, check_same_device, check_tensor
from .dispatch import select_backend
from .errors import KernelInputError
from .invariant import tree_sum

__all__ = ["rms_norm", "rms_norm_reference", "rms_norm_triton"]


def _check(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> None:
    if not isinstance(x, torch.Tensor):
        raise KernelInputError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1:
        raise KernelInputError(f"x: expected shape [..., D] with at least one dimension, got {list(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise KernelInputError(f"x: expected dtype in (float16, bfloat16, float32), got {x.dtype}")
    if x.shape[-1] == 0:
        raise KernelInputError(f"x: expected a non-empty last dimension D, got shape {list(x.shape)}")
    sizes = {"D": x.shape[-1]}
    if weight is not None:
        check_tensor("weight", weight, ["D"], sizes, FLOAT_DTYPES)
        check_same_device(["x", "weight"], [x, weight])
    if not isinstance(eps, (int, float)) or eps < 0:
        raise KernelInputError(f"eps: expected a non-negative float, got {eps!r}")


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension in torch; bitwise batch-invariant on every device."""
    _check(x, weight, eps)
    xf = x.float()
    mean_sq = tree_sum(xf * xf) / x.shape[-1]
    y = xf * (1.0 / torch.sqrt(mean_sq + eps)).unsqueeze(-1)
    if weight is not None:
        y = y * weight.float()
    return y.to(x.dtype)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension with the Triton kernel (one program per row)."""
    _check(x, weight, eps)
    from . import triton_norms

    return triton_norms.rms_norm(x, weight, float(eps))


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6, *, backend: str | None = None
) -> torch.Tensor:
    """Batch-invariant RMSNorm of ``x`` ([..., D]) scaled by ``weight`` ([D], optional).

    Dispatches to Triton for CUDA tensors and to the torch reference elsewhere; ``backend`` forces one.
    """
    tensors = [x] if weight is None else [x, weight]
    if select_backend(backend, *[t for t in tensors if isinstance(t, torch.Tensor)]) == "triton":
        return rms_norm_triton(x, weight, eps)
    return rms_norm_reference(x, weight, eps)
