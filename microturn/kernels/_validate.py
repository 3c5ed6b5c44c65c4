"""Argument checks that raise `KernelInputError` naming the argument, the expectation and what was given."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .errors import KernelInputError

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INDEX_DTYPES = (torch.int32, torch.int64)


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(
    name: str,
    value: object,
    dims: Sequence[str | int],
    sizes: dict[str, int],
    dtypes: Sequence[torch.dtype] | None = None,
) -> torch.Tensor:
    """Check that ``value`` is a tensor of rank ``len(dims)`` with the named sizes and an allowed dtype.

    ``dims`` mixes symbols and literal sizes. A symbol already in ``sizes`` must match; a new one is bound,
    so later arguments are checked against the sizes the earlier ones fixed.
    """
    if not isinstance(value, torch.Tensor):
        raise KernelInputError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    wanted = "[" + ", ".join(f"{d}={sizes[d]}" if isinstance(d, str) and d in sizes else str(d) for d in dims) + "]"
    if value.dim() != len(dims):
        raise KernelInputError(
            f"{name}: expected a {len(dims)}-d tensor of shape {wanted}, got shape {list(value.shape)}"
        )
    for axis, (dim, actual) in enumerate(zip(dims, value.shape, strict=True)):
        expected = sizes.get(dim) if isinstance(dim, str) else dim
        if expected is None:
            sizes[dim] = int(actual)  # type: ignore[index]
        elif actual != expected:
            raise KernelInputError(
                f"{name}: expected shape {wanted}, got {list(value.shape)} (dimension {axis}, {dim}: "
                f"expected {expected}, got {actual})"
            )
    if dtypes is not None and value.dtype not in dtypes:
        raise KernelInputError(f"{name}: expected dtype in ({_dtype_names(dtypes)}), got {value.dtype}")
    return value


def check_same_dtype(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
    """All tensors share one dtype."""
    first = tensors[0].dtype
    for name, t in zip(names[1:], tensors[1:], strict=True):
        if t.dtype != first:
            raise KernelInputError(f"{name}: expected dtype {first} (the dtype of {names[0]}), got {t.dtype}")


def check_same_device(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
    """All tensors live on one device."""
    first = tensors[0].device
    for name, t in zip(names[1:], tensors[1:], strict=True):
        if t.device != first:
            raise KernelInputError(f"{name}: expected device {first} (the device of {names[0]}), got {t.device}")


def check_positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    """An int ≥ 1 (or None where allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KernelInputError(f"{name}: expected a positive int{' or None' if allow_none else ''}, got {value!r}")
