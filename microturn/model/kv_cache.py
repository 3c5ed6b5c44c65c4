"""One layer's paged KV cache, the memory a streaming session keeps between ticks (see
:mod:`microturn.model.kv_session` for the layout). Its own module so the model's cached forward can take it
without the session importing the model and the model importing the session."""

from __future__ import annotations

import torch

__all__ = ["LayerCache"]


class LayerCache:
    """One layer's paged KV cache: a fixed ring (local layers), or a pool growing by blocks (global layers)."""

    def __init__(self, n_blocks: int, block_size: int, n_kv_heads: int, head_dim: int, *, ring: bool,
                 table_blocks: int, grow_blocks: int, device: torch.device | str = "cpu") -> None:
        self.ring = ring
        self.block_size = block_size
        self.grow_blocks = grow_blocks
        shape = (n_blocks, block_size, n_kv_heads, head_dim)
        # zeros, not empty: masked keys are multiplied by 0 in the kernel, which must not meet NaN.
        self.k = torch.zeros(shape, device=device)
        self.v = torch.zeros(shape, device=device)
        self.table = self._table(table_blocks, device)

    @property
    def n_blocks(self) -> int:
        """Physical blocks allocated."""
        return self.k.shape[0]

    def _table(self, size: int, device: torch.device | str) -> torch.Tensor:
        idx = torch.arange(size, dtype=torch.int32, device=device)
        return idx % self.n_blocks if self.ring else idx

    def reserve(self, length: int) -> None:
        """Make room for positions < ``length`` (grow the global pool by blocks; double the table)."""
        blocks = -(-length // self.block_size)
        if not self.ring and blocks > self.n_blocks:
            extra = -(-(blocks - self.n_blocks) // self.grow_blocks) * self.grow_blocks
            pad = self.k.new_zeros((extra, *self.k.shape[1:]))
            self.k = torch.cat([self.k, pad])
            self.v = torch.cat([self.v, pad])
        if blocks > self.table.shape[0]:
            size = self.table.shape[0]
            while size < blocks:
                size *= 2
            self.table = self._table(size, self.k.device)

    def memory_bytes(self) -> int:
        """Bytes held by this layer's keys, values and block table."""
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.table))
