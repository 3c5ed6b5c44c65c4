"""Deterministic split-KV attention over a block-structured (paged) KV cache, for decode and chunked prefill.

Layout:

* ``q`` [N, Hq, Dh]: the new tokens of one or more sessions, packed; session b owns rows
  ``query_start[b]:query_start[b+1]`` and its i-th row sits at absolute position ``seq_lens[b] - n_b + i``
  (the new tokens are the last ``n_b`` of the session's ``seq_lens[b]`` cached tokens: write them first, e.g.
  with `kv_cache_write`).
* ``k_cache``, ``v_cache`` [num_blocks, block_size, Hkv, Dh] with Hq a multiple of Hkv (grouped-query heads);
  ``block_table`` [B, max_blocks] maps session b's logical block i to a physical block.
* Masks: causal (a query at position p sees keys ≤ p), optionally a sliding window (keys in (p - window, p]);
  ``causal=False`` lets every query see the session's ``seq_lens[b]`` keys.

Every query row is reduced over KV splits at fixed absolute positions ``[s*S, (s+1)*S)`` with ``S =
split_size``, each split's partial (max, sum-exp, weighted values) merged left to right. Nothing depends on how
many rows or sessions share the call or on how the sequence was chunked, so a token's output has the same bits
whether the sequence was prefilled in one pass or appended chunk by chunk, alone or beside other sessions —
for a given ``split_size``. Use `PREFILL_SPLIT_SIZE` for prefill and `DECODE_SPLIT_SIZE` (more splits, so
more parallel work for one query) for decode, and keep each call site's choice fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._validate import FLOAT_DTYPES, INDEX_DTYPES, check_positive_int, check_same_device, check_same_dtype, check_tensor
from .dispatch import select_backend
from .errors import KernelInputError
from .invariant import ROW_BLOCK, det_exp, tree_sum

__all__ = [
    "DECODE_SPLIT_SIZE",
    "PREFILL_SPLIT_SIZE",
    "SPLIT_ALIGN",
    "attention",
    "kv_cache_write",
    "split_kv_attention_reference",
    "split_kv_attention_triton",
]

PREFILL_SPLIT_SIZE = 4096
DECODE_SPLIT_SIZE = 512
SPLIT_ALIGN = 16  # split sizes must be multiples of this, so the Triton kernel's key tiles never straddle a split


@dataclass(frozen=True)
class _Args:
    q: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_table: torch.Tensor  # [B, max_blocks]
    seq_lens: torch.Tensor  # [B], on q's device
    query_start: torch.Tensor  # [B + 1], on q's device
    scale: float
    causal: bool
    window: int | None
    split_size: int
    sizes: dict[str, int]


def _as_index_tensor(name: str, value: object, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.dtype not in INDEX_DTYPES:
            raise KernelInputError(f"{name}: expected dtype in (int32, int64), got {value.dtype}")
        return value.to(device)
    if isinstance(value, int) and not isinstance(value, bool):
        return torch.tensor([value], dtype=torch.int32, device=device)
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return torch.tensor(list(value), dtype=torch.int32, device=device)
    raise KernelInputError(f"{name}: expected an int tensor, an int or a list of ints, got {type(value).__name__}")


def _prepare(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor | int | list[int],
    query_start: torch.Tensor | list[int] | None,
    scale: float | None,
    causal: bool,
    window: int | None,
    split_size: int,
) -> _Args:
    sizes: dict[str, int] = {}
    check_tensor("q", q, ["N", "Hq", "Dh"], sizes, FLOAT_DTYPES)
    check_tensor("k_cache", k_cache, ["num_blocks", "block_size", "Hkv", "Dh"], sizes, FLOAT_DTYPES)
    check_tensor("v_cache", v_cache, ["num_blocks", "block_size", "Hkv", "Dh"], sizes, FLOAT_DTYPES)
    check_same_dtype(["q", "k_cache", "v_cache"], [q, k_cache, v_cache])
    if sizes["Dh"] == 0 or sizes["Hkv"] == 0 or sizes["block_size"] == 0:
        raise KernelInputError(f"k_cache: expected non-zero block_size, Hkv and Dh, got shape {list(k_cache.shape)}")
    if sizes["Hq"] % sizes["Hkv"]:
        raise KernelInputError(
            f"q: expected a number of heads Hq that is a multiple of the KV heads Hkv={sizes['Hkv']}, "
            f"got Hq={sizes['Hq']}"
        )
    if not isinstance(block_table, torch.Tensor):
        raise KernelInputError(f"block_table: expected an int tensor, got {type(block_table).__name__}")
    if block_table.dim() == 1:
        block_table = block_table.unsqueeze(0)
    check_tensor("block_table", block_table, ["B", "max_blocks"], sizes, INDEX_DTYPES)
    check_same_device(["q", "k_cache", "v_cache", "block_table"], [q, k_cache, v_cache, block_table])
    seq_lens_t = _as_index_tensor("seq_lens", seq_lens, q.device)
    check_tensor("seq_lens", seq_lens_t, ["B"], sizes)
    if query_start is None:
        if sizes["B"] != 1:
            raise KernelInputError(
                f"query_start: required when the batch has several sessions (B={sizes['B']}); "
                "expected [B + 1] offsets of each session's rows in q"
            )
        query_start_t = torch.tensor([0, sizes["N"]], dtype=torch.int32, device=q.device)
    else:
        query_start_t = _as_index_tensor("query_start", query_start, q.device)
        check_tensor("query_start", query_start_t, [sizes["B"] + 1], {})
    check_positive_int("split_size", split_size)
    if split_size % SPLIT_ALIGN:
        raise KernelInputError(f"split_size: expected a multiple of {SPLIT_ALIGN}, got {split_size}")
    check_positive_int("window", window, allow_none=True)
    if window is not None and not causal:
        raise KernelInputError("window: a sliding window needs causal=True, got causal=False")
    if scale is None:
        scale = sizes["Dh"] ** -0.5
    elif not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise KernelInputError(f"scale: expected a float or None, got {scale!r}")
    capacity = sizes["max_blocks"] * sizes["block_size"]
    # Value checks read the index tensors back: free on the CPU, a sync per call on a GPU, so only on the CPU.
    if not q.is_cuda:
        qs = query_start_t.tolist()
        lens = seq_lens_t.tolist()
        if qs[0] != 0 or qs[-1] != sizes["N"] or any(b < a for a, b in zip(qs, qs[1:], strict=False)):
            raise KernelInputError(f"query_start: expected non-decreasing offsets from 0 to N={sizes['N']}, got {qs}")
        for b, length in enumerate(lens):
            n_b = qs[b + 1] - qs[b]
            if not n_b <= length <= capacity:
                raise KernelInputError(
                    f"seq_lens: expected seq_lens[{b}] between the session's {n_b} new tokens and the block "
                    f"table's capacity {capacity} (max_blocks * block_size), got {length}"
                )
            used = block_table[b, : (length + sizes["block_size"] - 1) // sizes["block_size"]]
            if used.numel() and (int(used.min()) < 0 or int(used.max()) >= sizes["num_blocks"]):
                raise KernelInputError(
                    f"block_table: expected the used entries of session {b} in [0, num_blocks={sizes['num_blocks']}), "
                    f"got values in [{int(used.min())}, {int(used.max())}]"
                )
    return _Args(
        q,
        k_cache,
        v_cache,
        block_table,
        seq_lens_t,
        query_start_t,
        float(scale),
        bool(causal),
        window,
        split_size,
        sizes,
    )


# The reference folds each split in key tiles (absolute multiples of the tile, which divides the split), like
# the Triton kernel, so its cost follows the keys that exist rather than the split size.
_REF_TILE_MAX = 256


def _gather_tile(a: _Args, b: int, length: int, start: int, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values at positions [start, start+tile) of session b as fresh fp32 [Hq, tile, Dh] tensors.

    Positions past the sequence end read as zeros (the cache may hold anything there, NaN included), and every
    tile is a new contiguous tensor so each GEMM sees the same shape, strides and alignment.
    """
    bs = a.sizes["block_size"]
    group = a.sizes["Hq"] // a.sizes["Hkv"]
    pos = torch.arange(start, start + tile, device=a.q.device)
    inside = (pos < length)[:, None, None]
    pos = pos.clamp(max=length - 1)
    phys = a.block_table[b, pos // bs].long()
    off = pos % bs
    out = []
    for cache in (a.k_cache, a.v_cache):
        kv = torch.where(inside, cache[phys, off].float(), 0.0)  # [tile, Hkv, Dh]
        out.append(kv.permute(1, 0, 2).repeat_interleave(group, dim=0).contiguous())
    return out[0], out[1]


def split_kv_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor | int | list[int],
    *,
    query_start: torch.Tensor | list[int] | None = None,
    scale: float | None = None,
    causal: bool = True,
    window: int | None = None,
    split_size: int = PREFILL_SPLIT_SIZE,
) -> torch.Tensor:
    """Split-KV attention in torch (see the module docstring); bitwise batch- and chunking-invariant.

    Query rows go through in blocks of 16 absolute positions (a token's row in its block is fixed by its
    position), keys in fixed absolute tiles inside each split, and exp and sums use the elementwise-deterministic
    helpers, so every GEMM and reduction has one fixed shape and a key tile or split with nothing for a row
    leaves that row's state bit for bit.
    """
    a = _prepare(q, k_cache, v_cache, block_table, seq_lens, query_start, scale, causal, window, split_size)
    hq, dh, size = a.sizes["Hq"], a.sizes["Dh"], a.split_size
    tile = min(_REF_TILE_MAX, size & -size)
    out = torch.empty_like(q)
    dev = q.device
    neg_inf = torch.tensor(float("-inf"), device=dev)
    qs, lens = a.query_start.tolist(), a.seq_lens.tolist()
    for b, length in enumerate(lens):
        first_row, n_b = qs[b], qs[b + 1] - qs[b]
        tiles: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        first_pos = length - n_b
        # Row blocks sit at absolute multiples of 16 positions, as in the Triton kernel: a token's row in its
        # GEMMs depends on its position alone, never on where the chunk that brought it began.
        for p0 in range(first_pos // ROW_BLOCK * ROW_BLOCK, length if n_b else first_pos, ROW_BLOCK):
            lo_row, hi_row = max(p0, first_pos) - p0, min(p0 + ROW_BLOCK, length) - p0  # valid rows of the block
            # Padding rows take the nearest valid row's position, so every row sees at least one key (no NaN).
            pos = torch.arange(ROW_BLOCK, device=dev).clamp(lo_row, hi_row - 1) + p0
            q_block = q.new_zeros(ROW_BLOCK, hq, dh, dtype=torch.float32)
            q_first = first_row + p0 + lo_row - first_pos
            q_block[lo_row:hi_row] = q[q_first : q_first + hi_row - lo_row].float()
            q_heads = q_block.transpose(0, 1).contiguous()  # [Hq, 16, Dh]
            lo_key = max(0, int(pos[0]) - a.window + 1) if a.window else 0  # pos[0], pos[-1]: valid rows
            hi_key = int(pos[-1]) + 1 if a.causal else length
            m = torch.full((hq, ROW_BLOCK), float("-inf"), device=dev)
            l_sum = torch.zeros(hq, ROW_BLOCK, device=dev)
            acc = torch.zeros(hq, ROW_BLOCK, dh, device=dev)
            for s in range(lo_key // size, (hi_key - 1) // size + 1):
                m_s = torch.full((hq, ROW_BLOCK), float("-inf"), device=dev)
                l_s = torch.zeros(hq, ROW_BLOCK, device=dev)
                acc_s = torch.zeros(hq, ROW_BLOCK, dh, device=dev)
                split_end = min((s + 1) * size, hi_key)
                for t0 in range(max(s * size, lo_key) // tile * tile, split_end, tile):
                    if t0 not in tiles:
                        tiles[t0] = _gather_tile(a, b, length, t0, tile)
                    k_heads, v_heads = tiles[t0]
                    key_pos = torch.arange(t0, t0 + tile, device=dev)[None, :]
                    if a.causal:
                        valid = key_pos <= pos[:, None]
                        if a.window:
                            valid = valid & (key_pos > pos[:, None] - a.window)
                    else:
                        valid = (key_pos < length).expand(ROW_BLOCK, tile)
                    scores = torch.where(valid, torch.bmm(q_heads, k_heads.transpose(1, 2)) * a.scale, neg_inf)
                    m_new = torch.maximum(m_s, scores.amax(dim=-1))
                    m_safe = torch.where(m_new == neg_inf, 0.0, m_new)
                    # A tile with nothing for a row must leave its state bit for bit: weight exactly 1.
                    alpha = torch.where(m_s == m_new, 1.0, det_exp(m_s - m_safe))
                    p = torch.where(valid, det_exp(scores - m_safe[..., None]), 0.0)
                    l_s = l_s * alpha + tree_sum(p)
                    acc_s = acc_s * alpha[..., None] + torch.bmm(p, v_heads)
                    m_s = m_new
                # Merge the split left to right; an empty split or empty state gets weight exactly 0.
                m_new = torch.maximum(m, m_s)
                alpha = torch.where(m == neg_inf, 0.0, det_exp(m - m_new))
                beta = torch.where(m_s == neg_inf, 0.0, det_exp(m_s - m_new))
                acc = acc * alpha[..., None] + acc_s * beta[..., None]
                l_sum = l_sum * alpha + l_s * beta
                m = m_new
            res = acc / l_sum[..., None]
            out[q_first : q_first + hi_row - lo_row] = res.transpose(0, 1)[lo_row:hi_row].to(q.dtype)
    return out


def split_kv_attention_triton(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor | int | list[int],
    *,
    query_start: torch.Tensor | list[int] | None = None,
    scale: float | None = None,
    causal: bool = True,
    window: int | None = None,
    split_size: int = PREFILL_SPLIT_SIZE,
) -> torch.Tensor:
    """Split-KV attention with the Triton kernels: one program per (session, 16 tokens, KV head, split), then
    a merge per (token, head). Nothing is read back from the device: the grid comes from host-known bounds.
    """
    a = _prepare(q, k_cache, v_cache, block_table, seq_lens, query_start, scale, causal, window, split_size)
    from . import triton_split_kv

    return triton_split_kv.split_kv_attention(
        q,
        k_cache,
        v_cache,
        a.block_table,
        a.seq_lens,
        a.query_start,
        scale=a.scale,
        causal=a.causal,
        window=a.window,
        split_size=a.split_size,
    )


def attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor | int | list[int],
    *,
    query_start: torch.Tensor | list[int] | None = None,
    scale: float | None = None,
    causal: bool = True,
    window: int | None = None,
    split_size: int = PREFILL_SPLIT_SIZE,
    backend: str | None = None,
) -> torch.Tensor:
    """Deterministic split-KV attention of ``q`` over a paged KV cache (see the module docstring).

    ``block_table`` may be 1-d and ``seq_lens`` an int for a single session; ``scale`` defaults to Dh**-0.5.
    Triton for CUDA tensors, the torch reference elsewhere; ``backend`` forces one. Index values (seq_lens,
    block_table, query_start) are range-checked on the CPU only.
    """
    tensors = [t for t in (q, k_cache, v_cache, block_table) if isinstance(t, torch.Tensor)]
    kwargs = dict(query_start=query_start, scale=scale, causal=causal, window=window, split_size=split_size)
    if select_backend(backend, *tensors) == "triton":
        return split_kv_attention_triton(q, k_cache, v_cache, block_table, seq_lens, **kwargs)
    return split_kv_attention_reference(q, k_cache, v_cache, block_table, seq_lens, **kwargs)


def kv_cache_write(
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    start: int,
    k: torch.Tensor,
    v: torch.Tensor,
) -> None:
    """Write one session's new keys and values ``k``, ``v`` [T, Hkv, Dh] at positions ``start .. start+T-1``.

    ``block_table`` [max_blocks] is that session's table. Plain torch indexing, so it runs on any device.
    """
    sizes: dict[str, int] = {}
    check_tensor("k_cache", k_cache, ["num_blocks", "block_size", "Hkv", "Dh"], sizes, FLOAT_DTYPES)
    check_tensor("v_cache", v_cache, ["num_blocks", "block_size", "Hkv", "Dh"], sizes, FLOAT_DTYPES)
    check_tensor("block_table", block_table, ["max_blocks"], sizes, INDEX_DTYPES)
    check_tensor("k", k, ["T", "Hkv", "Dh"], sizes, FLOAT_DTYPES)
    check_tensor("v", v, ["T", "Hkv", "Dh"], sizes, FLOAT_DTYPES)
    check_same_dtype(["k_cache", "v_cache", "k", "v"], [k_cache, v_cache, k, v])
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise KernelInputError(f"start: expected a non-negative int, got {start!r}")
    capacity = sizes["max_blocks"] * sizes["block_size"]
    if start + sizes["T"] > capacity:
        raise KernelInputError(
            f"k: positions {start}..{start + sizes['T'] - 1} do not fit the block table's capacity {capacity}"
        )
    pos = torch.arange(start, start + sizes["T"], device=k_cache.device)
    phys = block_table.to(k_cache.device)[pos // sizes["block_size"]].long()
    off = pos % sizes["block_size"]
    k_cache[phys, off] = k
    v_cache[phys, off] = v
