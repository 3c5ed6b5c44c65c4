"""Backend selection shared by every op's dispatcher.

Triton is optional: nothing here imports it eagerly, so `microturn.kernels` works (through the torch
references) on machines without it, and the interpreter switch TRITON_INTERPRET only has to be set before the
first Triton call rather than before the first import of this package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import os
import sys
from typing import TYPE_CHECKING, Literal

from .errors import KernelBackendError, KernelInputError

if TYPE_CHECKING:
    import torch

__all__ = ["Backend", "interpreter_enabled", "interpreter_problem", "select_backend", "triton_available"]

Backend = Literal["triton", "torch"]


def triton_available() -> bool:
    """True when the `triton` package can be imported (it is not imported here)."""
    if "triton" in sys.modules:  # covers an import blocked with sys.modules["triton"] = None
        return sys.modules["triton"] is not None
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        parts.append(int(digits or 0))
    return tuple(parts)


def interpreter_problem() -> str | None:
    """Why Triton kernels cannot run on CPU tensors through the interpreter here, or None when they can.

    Triton's interpreter before 3.7 turns one-element arrays into Python ints, which numpy 2.4 refuses, so
    every kernel with a runtime loop bound fails there with an opaque TypeError.
    """
    if not triton_available():
        return "the triton package is not installed"
    try:
        triton_version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return None
    import numpy

    if _version(triton_version) < (3, 7) and _version(numpy.__version__) >= (2, 4):
        return (
            f"the Triton interpreter of triton {triton_version} fails with numpy {numpy.__version__}: "
            "install triton>=3.7 (or numpy<2.4) to run Triton kernels on the CPU"
        )
    return None


def interpreter_enabled() -> bool:
    """True when TRITON_INTERPRET=1, i.e. Triton kernels run on CPU tensors through the interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def select_backend(backend: str | None, *tensors: torch.Tensor) -> Backend:
    """Pick the backend for one call.

    ``None`` picks Triton when the tensors live on CUDA and Triton is installed, and the torch reference
    otherwise. ``"triton"`` and ``"torch"`` force a backend; forcing Triton on CPU tensors needs the
    interpreter (TRITON_INTERPRET=1 set before the first Triton call).
    """
    on_cuda = bool(tensors) and all(t.is_cuda for t in tensors)
    if backend is None:
        return "triton" if on_cuda and triton_available() else "torch"
    if backend == "torch":
        return "torch"
    if backend != "triton":
        raise KernelInputError(f"backend: expected 'triton', 'torch' or None, got {backend!r}")
    if not triton_available():
        raise KernelBackendError("backend='triton' was requested but the triton package is not installed")
    if not on_cuda:
        if not interpreter_enabled():
            raise KernelBackendError(
                "backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 (set before the first Triton call) "
                "to run the kernels on the CPU through the Triton interpreter"
            )
        problem = interpreter_problem()
        if problem is not None:
            raise KernelBackendError(f"backend='triton' on CPU tensors: {problem}")
    return "triton"
