"""MoE MLP for decode: gather + GEMV (the fast path) and the grouped-GEMM baseline it is measured against.

Shapes (SwiGLU experts, gate and up stacked in one tensor):

* ``x`` [T, D] tokens; ``topk_ids`` [T, k] int32/int64 expert ids; ``topk_weights`` [T, k] router weights;
* ``w_gate_up`` [E, 2F, D]: rows ``[0, F)`` of expert e are the gate projection, rows ``[F, 2F)`` the up
  projection; ``w_down`` [E, D, F].
* ``out[t] = sum_j topk_weights[t, j] * down_e(silu(gate_e(x_t)) * up_e(x_t))`` with ``e = topk_ids[t, j]``,
  summed in slot order j = 0, 1, …, k-1, in float32, cast to x's dtype.

Gather + GEMV treats every (token, slot) pair as its own matrix-vector product streaming that expert's weights
once: no sort, no padding, no scatter, and an expert nobody picked costs nothing. A pair's reduction order is
fixed by D and F alone, so each token's output is bitwise independent of the other tokens in the batch. The
reference gets the same invariance by running each expert's rows in fixed blocks of 16.

The grouped-GEMM baseline is the usual prefill-style layout (pairs sorted by expert, each expert's group padded
to ``block_m`` rows, one tiled GEMM per block); it exists to be benchmarked against.
"""

from __future__ import annotations

import torch

from ._validate import FLOAT_DTYPES, INDEX_DTYPES, check_same_device, check_same_dtype, check_tensor
from .dispatch import select_backend
from .errors import KernelInputError
from .invariant import ROW_BLOCK, blocked_mm, det_silu

__all__ = [
    "moe_align_block_size",
    "moe_gemv",
    "moe_gemv_reference",
    "moe_gemv_triton",
    "moe_grouped_gemm",
    "moe_grouped_gemm_reference",
    "moe_grouped_gemm_triton",
]


def _check(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
) -> dict[str, int]:
    sizes: dict[str, int] = {}
    check_tensor("x", x, ["T", "D"], sizes, FLOAT_DTYPES)
    check_tensor("topk_ids", topk_ids, ["T", "k"], sizes, INDEX_DTYPES)
    check_tensor("topk_weights", topk_weights, ["T", "k"], sizes, FLOAT_DTYPES)
    check_tensor("w_gate_up", w_gate_up, ["E", "2F", "D"], sizes, FLOAT_DTYPES)
    if sizes["2F"] % 2:
        raise KernelInputError(
            f"w_gate_up: expected shape [E, 2F, D] with an even second dimension (gate rows then up rows), "
            f"got {list(w_gate_up.shape)}"
        )
    sizes["F"] = sizes["2F"] // 2
    check_tensor("w_down", w_down, ["E", "D", "F"], sizes, FLOAT_DTYPES)
    if sizes["E"] == 0 or sizes["F"] == 0 or sizes["D"] == 0:
        raise KernelInputError(
            f"w_gate_up/w_down: expected E, F and D ≥ 1, got E={sizes['E']}, F={sizes['F']}, D={sizes['D']}"
        )
    check_same_dtype(["x", "w_gate_up", "w_down"], [x, w_gate_up, w_down])
    check_same_device(
        ["x", "topk_ids", "topk_weights", "w_gate_up", "w_down"], [x, topk_ids, topk_weights, w_gate_up, w_down]
    )
    # Range-checking ids on a GPU would cost a device sync per call in the decode loop; on the CPU it is free.
    if not topk_ids.is_cuda and topk_ids.numel():
        lo, hi = int(topk_ids.min()), int(topk_ids.max())
        if lo < 0 or hi >= sizes["E"]:
            raise KernelInputError(f"topk_ids: expected expert ids in [0, E={sizes['E']}), got values in [{lo}, {hi}]")
    return sizes


def _combine(y: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum over slots in slot order 0..k-1, in float32: a fixed order, whatever the batch."""
    w = topk_weights.float()
    out = torch.zeros(y.shape[0], y.shape[2], dtype=torch.float32, device=y.device)
    for j in range(y.shape[1]):
        out = out + w[:, j, None] * y[:, j]
    return out


def moe_gemv_reference(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
) -> torch.Tensor:
    """MoE MLP output [T, D] in torch; bitwise batch-invariant (each expert's rows in fixed 16-row blocks)."""
    s = _check(x, topk_ids, topk_weights, w_gate_up, w_down)
    t_count, k, d, f = s["T"], s["k"], s["D"], s["F"]
    if t_count == 0 or k == 0:
        return torch.zeros_like(x)
    y = torch.zeros(t_count, k, d, dtype=torch.float32, device=x.device)
    xf = x.float()
    flat = topk_ids.reshape(-1).tolist()
    pairs_of: dict[int, list[int]] = {}
    for pair, e in enumerate(flat):
        pairs_of.setdefault(e, []).append(pair)
    y2 = y.view(t_count * k, d)
    for e in sorted(pairs_of):
        pairs = torch.tensor(pairs_of[e], device=x.device)
        h = blocked_mm(xf[pairs // k], w_gate_up[e].float().t())
        act = det_silu(h[:, :f]) * h[:, f:]
        y2[pairs] = blocked_mm(act, w_down[e].float().t())
    return _combine(y, topk_weights).to(x.dtype)


def moe_gemv_triton(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
) -> torch.Tensor:
    """MoE MLP output [T, D] with the Triton gather + GEMV kernels."""
    _check(x, topk_ids, topk_weights, w_gate_up, w_down)
    from . import triton_moe

    return triton_moe.moe_gemv(x, topk_ids, topk_weights, w_gate_up, w_down)


def moe_gemv(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Decode-time MoE MLP by gather + GEMV (see the module docstring for shapes and the exact sum).

    Meant for T ≤ ~16 tokens; larger T works but the grouped GEMM serves prefill better. Triton for CUDA
    tensors, the torch reference elsewhere; ``backend`` forces one. Expert ids are range-checked on the CPU only.
    """
    tensors = [t for t in (x, topk_ids, topk_weights, w_gate_up, w_down) if isinstance(t, torch.Tensor)]
    if select_backend(backend, *tensors) == "triton":
        return moe_gemv_triton(x, topk_ids, topk_weights, w_gate_up, w_down)
    return moe_gemv_reference(x, topk_ids, topk_weights, w_gate_up, w_down)


def moe_align_block_size(
    topk_ids: torch.Tensor, num_experts: int, block_m: int = ROW_BLOCK
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort (token, slot) pairs by expert and pad each expert's group to a multiple of ``block_m``.

    Returns ``(sorted_pairs, block_experts, num_padded)``: ``sorted_pairs`` [P] holds flat pair indices
    ``t * k + j`` grouped by expert, padding slots holding ``T * k``; ``block_experts`` [P // block_m] the expert
    of each block (``num_experts`` past the end); ``num_padded`` a 1-element tensor with the used length. P is
    a bound known without reading the ids back, so nothing here waits for the device.
    """
    if isinstance(block_m, bool) or not isinstance(block_m, int) or block_m < 1:
        raise KernelInputError(f"block_m: expected a positive int, got {block_m!r}")
    device = topk_ids.device
    flat = topk_ids.reshape(-1).long()
    pairs = flat.numel()
    counts = torch.bincount(flat, minlength=num_experts)[:num_experts]
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = torch.cumsum(padded, 0)
    order = torch.argsort(flat, stable=True)
    sorted_experts = flat[order]
    group_start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(pairs, device=device) - group_start[sorted_experts]
    bound = (pairs + min(num_experts, pairs) * (block_m - 1) + block_m - 1) // block_m * block_m
    sorted_pairs = torch.full((bound,), pairs, dtype=torch.int32, device=device)
    sorted_pairs[(padded_end - padded)[sorted_experts] + rank] = order.to(torch.int32)
    block_starts = torch.arange(0, bound, block_m, device=device)
    block_experts = torch.searchsorted(padded_end, block_starts, right=True).to(torch.int32)
    return sorted_pairs, block_experts, padded_end[-1:].to(torch.int32)


def moe_grouped_gemm_reference(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    *,
    block_m: int = ROW_BLOCK,
) -> torch.Tensor:
    """The grouped-GEMM baseline in torch: sorted pairs, padded ``block_m``-row blocks, one GEMM per block."""
    s = _check(x, topk_ids, topk_weights, w_gate_up, w_down)
    t_count, k, d, f = s["T"], s["k"], s["D"], s["F"]
    if t_count == 0 or k == 0:
        return torch.zeros_like(x)
    sorted_pairs, block_experts, num_padded = moe_align_block_size(topk_ids, s["E"], block_m)
    x_ext = torch.cat([x.float(), x.new_zeros(1, d, dtype=torch.float32)])  # row T: padding slots read zeros
    y = torch.zeros(t_count * k + 1, d, dtype=torch.float32, device=x.device)
    for blk in range(int(num_padded) // block_m):
        rows = sorted_pairs[blk * block_m : (blk + 1) * block_m].long()
        e = int(block_experts[blk])
        h = x_ext[rows // k] @ w_gate_up[e].float().t()
        y[rows] = (torch.nn.functional.silu(h[:, :f]) * h[:, f:]) @ w_down[e].float().t()
    return _combine(y[:-1].view(t_count, k, d), topk_weights).to(x.dtype)


def moe_grouped_gemm_triton(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    *,
    block_m: int = ROW_BLOCK,
    aligned: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The grouped-GEMM baseline with Triton tiled GEMMs (``aligned`` reuses a `moe_align_block_size` result)."""
    s = _check(x, topk_ids, topk_weights, w_gate_up, w_down)
    if isinstance(block_m, bool) or not isinstance(block_m, int) or block_m < 16 or block_m & (block_m - 1):
        raise KernelInputError(f"block_m: expected a power of two ≥ 16 (a tensor-core tile), got {block_m!r}")
    from . import triton_moe

    if aligned is None:
        aligned = moe_align_block_size(topk_ids, s["E"], block_m)
    return triton_moe.moe_grouped_gemm(x, topk_ids, topk_weights, w_gate_up, w_down, aligned, block_m)


def moe_grouped_gemm(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    *,
    block_m: int = ROW_BLOCK,
    backend: str | None = None,
) -> torch.Tensor:
    """The grouped-GEMM MoE baseline (same maths as `moe_gemv`): Triton on CUDA, the torch reference elsewhere."""
    tensors = [t for t in (x, topk_ids, topk_weights, w_gate_up, w_down) if isinstance(t, torch.Tensor)]
    if select_backend(backend, *tensors) == "triton":
        return moe_grouped_gemm_triton(x, topk_ids, topk_weights, w_gate_up, w_down, block_m=block_m)
    return moe_grouped_gemm_reference(x, topk_ids, topk_weights, w_gate_up, w_down, block_m=block_m)
