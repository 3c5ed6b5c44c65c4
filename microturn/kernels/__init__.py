"""Kernels for real-time decoding: fast at a few tokens per session per tick, and bitwise reproducible.

Each op has a torch reference (what the model runs on the CPU; batch- and chunking-invariant by construction),
a Triton kernel beside it, and a dispatcher that picks Triton for CUDA tensors and the reference elsewhere
(``backend="triton" | "torch"`` forces one). Triton is optional and imported only on first use; torch is
required (the ``torch`` extra).

* `moe_gemv`: MoE MLP by gather + GEMV for decode; `moe_grouped_gemm` is the sorted/padded baseline.
* `attention`: deterministic split-KV attention over a paged KV cache (decode and chunked prefill).
* `rms_norm`, `matmul`: batch-invariant RMSNorm and matmul.
"""

try:
    import torch as _torch  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - exercised only without the torch extra
    raise ModuleNotFoundError(
        "microturn.kernels needs torch; install the torch extra: pip install 'microturn[torch]'"
    ) from exc

from .dispatch import Backend, interpreter_enabled, interpreter_problem, select_backend, triton_available
from .errors import KernelBackendError, KernelInputError
from .gemm import matmul, matmul_reference, matmul_triton
from .invariant import ROW_BLOCK, blocked_mm, det_exp, det_silu, tree_sum
from .moe import (
    moe_align_block_size,
    moe_gemv,
    moe_gemv_reference,
    moe_gemv_triton,
    moe_grouped_gemm,
    moe_grouped_gemm_reference,
    moe_grouped_gemm_triton,
)
from .norms import rms_norm, rms_norm_reference, rms_norm_triton
from .split_kv import (
    DECODE_SPLIT_SIZE,
    PREFILL_SPLIT_SIZE,
    SPLIT_ALIGN,
    attention,
    kv_cache_write,
    split_kv_attention_reference,
    split_kv_attention_triton,
)

__all__ = [
    "DECODE_SPLIT_SIZE",
    "PREFILL_SPLIT_SIZE",
    "ROW_BLOCK",
    "SPLIT_ALIGN",
    "Backend",
    "KernelBackendError",
    "KernelInputError",
    "attention",
    "blocked_mm",
    "det_exp",
    "det_silu",
    "interpreter_enabled",
    "interpreter_problem",
    "kv_cache_write",
    "matmul",
    "matmul_reference",
    "matmul_triton",
    "moe_align_block_size",
    "moe_gemv",
    "moe_gemv_reference",
    "moe_gemv_triton",
    "moe_grouped_gemm",
    "moe_grouped_gemm_reference",
    "moe_grouped_gemm_triton",
    "rms_norm",
    "rms_norm_reference",
    "rms_norm_triton",
    "select_backend",
    "split_kv_attention_reference",
    "split_kv_attention_triton",
    "tree_sum",
    "triton_available",
]
