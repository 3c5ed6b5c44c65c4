"""The interaction model's configuration (torch-free): sizes, routing, attention windows, and the stream layout's
per-tick budgets. Presets: :func:`tiny` for tests, :func:`embedded` for the shipped CPU model."""

from __future__ import annotations

import msgspec

from .layout import MAX_INPUT_HEADER, VOCAB_SIZE

__all__ = ["PRESETS", "ConfigError", "ModelConfig", "embedded", "tiny"]


class ConfigError(ValueError):
    """A :class:`ModelConfig` field has an invalid value; the message names the field and the value."""


class ModelConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes of the interaction model and of one tick of its stream.

    ``window`` is in tokens (the attention kernel's unit): local layers see the last ``window`` positions.
    ``global_layers`` lists layer indices that attend to the whole history (their cache grows by blocks).
    ``outputs_per_tick`` (K) bounds the tokens decoded per tick; ``max_input_tokens`` bounds the queued input
    items (dMel frames, text bytes, patches) appended per tick after the fixed header; the rest waits a tick.
    """

    vocab_size: int = VOCAB_SIZE
    d_model: int = 96
    n_layers: int = 3
    n_heads: int = 4
    n_kv_heads: int = 2
    n_experts: int = 8
    top_k: int = 2
    d_expert: int = 96
    window: int = 384
    global_layers: tuple[int, ...] = ()
    outputs_per_tick: int = 6
    max_input_tokens: int = 48
    block_size: int = 16
    split_size: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    dmel_bands: int = 80
    dmel_levels: int = 16
    patch_size: int = 40
    stem_dims: tuple[int, int, int] = (32, 64, 96)
    """Widths of the hMLP stem's three stages (4x4 px sub-patches, then 8x8, then the whole 40x40 patch)."""
    flow_dim: int = 80
    """Size of one generated audio frame (a continuous dMel-like frame)."""
    flow_hidden: int = 128
    flow_steps: int = 4
    lb_coef: float = 0.01
    """Weight of the MoE load-balance loss in the training loss."""

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ModelConfig.{name}: expected a positive int, got {value!r}")

        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "n_experts", "top_k",
                     "d_expert", "window", "outputs_per_tick", "max_input_tokens", "block_size", "split_size",
                     "dmel_bands", "dmel_levels", "patch_size", "flow_dim", "flow_hidden", "flow_steps"):
            positive(name)
        if self.vocab_size < VOCAB_SIZE:
            raise ConfigError(f"ModelConfig.vocab_size: expected ≥ {VOCAB_SIZE} (the layout's vocabulary), "
                              f"got {self.vocab_size}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"ModelConfig.d_model: expected a multiple of n_heads={self.n_heads}, got {self.d_model}")
        if (self.d_model // self.n_heads) % 2:
            raise ConfigError(f"ModelConfig.n_heads: head dim d_model/n_heads must be even for rotary, "
                              f"got {self.d_model // self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"ModelConfig.n_kv_heads: expected a divisor of n_heads={self.n_heads}, "
                              f"got {self.n_kv_heads}")
        if self.top_k > self.n_experts:
            raise ConfigError(f"ModelConfig.top_k: expected ≤ n_experts={self.n_experts}, got {self.top_k}")
        if self.split_size % 16:
            raise ConfigError(f"ModelConfig.split_size: expected a multiple of 16, got {self.split_size}")
        for layer in self.global_layers:
            if not 0 <= layer < self.n_layers:
                raise ConfigError(f"ModelConfig.global_layers: expected indices in [0, {self.n_layers}), "
                                  f"got {self.global_layers}")
        if self.patch_size != 40:
            raise ConfigError(f"ModelConfig.patch_size: the hMLP stem is built for 40, got {self.patch_size}")
        if len(self.stem_dims) != 3:
            raise ConfigError(f"ModelConfig.stem_dims: expected three stage widths, got {self.stem_dims}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    @property
    def max_chunk_tokens(self) -> int:
        """The most positions one step appends at once: the carried last output, the header, queued inputs."""
        return 1 + MAX_INPUT_HEADER + self.max_input_tokens

    def is_global(self, layer: int) -> bool:
        """Whether ``layer`` attends to the whole history."""
        return layer in self.global_layers


def tiny() -> ModelConfig:
    """A very small configuration for tests: one local and one global layer, 4 experts."""
    return ModelConfig(
        d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, n_experts=4, top_k=2, d_expert=32, window=48,
        global_layers=(1,), outputs_per_tick=8, max_input_tokens=24, stem_dims=(8, 16, 32), flow_hidden=32,
        flow_steps=2,
    )


def embedded() -> ModelConfig:
    """The shipped CPU model: all-local layers so a tick's cost is bounded however long the session runs."""
    return ModelConfig()


PRESETS = {"tiny": tiny, "embedded": embedded}
