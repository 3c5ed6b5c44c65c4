"""Exceptions raised by the kernels package."""

from __future__ import annotations

__all__ = ["KernelBackendError", "KernelInputError"]


class KernelInputError(ValueError):
    """An argument has the wrong shape, dtype, device or value; the message names it and what was expected."""


class KernelBackendError(RuntimeError):
    """The requested backend cannot run here (Triton missing, or CPU tensors without the Triton interpreter)."""
