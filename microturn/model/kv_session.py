"""The streaming session: a model's KV cache kept between ticks, one tick appended and decoded per step.

Memory layout (paged, the `microturn.kernels.attention` layout ``[blocks, block_size, Hkv, Dh]``):

* **local layers** use a ring of ``R`` blocks allocated once: logical block i lives in physical block i mod R,
  with ``R·block_size ≥ window + max_chunk_tokens`` so a step never overwrites a key that one of its queries
  still sees. Memory is constant however long the session runs.
* **global layers** use a pool that grows by ``grow_blocks`` blocks when full (never per tick: one growth
  every ``grow_blocks·block_size`` positions).
* block tables are int32 logical→physical maps, preallocated and doubled when the history outgrows them.

A step appends the carried last output token of the previous tick plus this tick's input positions in one
chunk, then decodes up to K tokens one at a time (greedy at temperature 0, else sampled with the session's
seeded generator). The last decoded token is carried to the next step rather than run now (its logits would
only predict the next TICK), which saves one forward per tick and leaves the sequence unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import torch

from microturn.kernels import det_exp

from .kv_cache import LayerCache
from .layout import END, OUTPUT_TOKENS, EncodedTick, OutputDecoder, TickEncoder
from .protocol import StepInput, StepOutput
from .torch_model import InteractionModel

__all__ = ["KVSession", "LayerCache", "SessionError", "SessionSnapshot", "TurnMark"]


class SessionError(RuntimeError):
    """A session was used wrongly (a chunk too large for the ring, a snapshot from another model)."""


@dataclass(frozen=True)
class TurnMark:
    """Where a session stood before a turn (:meth:`KVSession.mark`): what :meth:`KVSession.rollback` needs to
    undo that turn. Cheap: no tensor is copied (see :meth:`KVSession.rollback` for why none has to be)."""

    length: int
    carry: int | None
    ticks: int
    rng: torch.Tensor


@dataclass(frozen=True)
class SessionSnapshot:
    """A copy of a session's whole state; :meth:`KVSession.restore` puts it back bit for bit."""

    config: Any
    length: int
    carry: int | None
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    tables: tuple[torch.Tensor, ...]
    encoder: list
    decoder: tuple
    rng: torch.Tensor
    ticks: int


GREEDY_BELOW = 1e-6
"""Temperatures below this sample greedily (sglang's ``_SAMPLING_EPS``): dividing by less overflows."""


FLOW_FRAMES = 4
"""Audio frames the flow head gives per step: one 200 ms window of 50 ms dMel frames."""


def flow_condition_rows(n_states: int) -> list[int]:
    """Which of a step's ``n_states`` hidden states (its last input position, then each output slot but the
    last) conditions each of its :data:`FLOW_FRAMES` frames: the j-th, or the last when there are fewer.
    Training (:func:`microturn.training.flow.flow_pairs`) and sampling share this rule."""
    return [min(j, n_states - 1) for j in range(FLOW_FRAMES)]


class KVSession:
    """A streaming session over an :class:`InteractionModel` (exact path).

    ``ring=False`` makes every layer a linear cache sized for ``capacity`` positions (the one-pass teacher-forced
    reference in tests). ``trace`` keeps every appended chunk and its logits (tests, corpus debugging).
    """

    def __init__(self, model: InteractionModel, *, temperature: float = 0.0, seed: int = 0, ring: bool = True,
                 capacity: int | None = None, grow_blocks: int = 64, table_positions: int = 1 << 16,
                 trace: bool = False, audio: bool = False) -> None:
        cfg = model.cfg
        if temperature < 0:
            raise SessionError(f"temperature: expected ≥ 0, got {temperature!r}")
        self.model = model
        self.cfg = cfg
        self.temperature = float(temperature)
        self.seed = seed
        self.audio = audio
        self.hidden: list[torch.Tensor] = []  # this step's flow conditions (audio only)
        self.device = next(model.parameters()).device
        bs = cfg.block_size
        ring_blocks = -(-(cfg.window + cfg.max_chunk_tokens) // bs) + 1
        table_blocks = -(-max(table_positions, capacity or 0) // bs)
        self.caches: list[LayerCache] = []
        for layer in range(cfg.n_layers):
            is_ring = ring and not cfg.is_global(layer)
            if is_ring:
                n = ring_blocks
            elif capacity is not None:
                n = -(-capacity // bs)
            else:
                n = grow_blocks
            self.caches.append(LayerCache(n, bs, cfg.n_kv_heads, cfg.head_dim, ring=is_ring,
                                          table_blocks=table_blocks, grow_blocks=grow_blocks, device=self.device))
        self.length = 0
        self.carry: int | None = None
        self.ticks = 0
        self.encoder = TickEncoder(cfg.max_input_tokens)
        self.decoder = OutputDecoder()
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        allowed = torch.full((cfg.vocab_size,), float("-inf"))
        allowed[list(OUTPUT_TOKENS)] = 0.0
        self.output_mask = allowed.to(self.device)
        self.trace: list[tuple[EncodedTick, torch.Tensor]] | None = [] if trace else None

    # --- appending and decoding ------------------------------------------------------------------------------

    def append(self, chunk: EncodedTick) -> torch.Tensor:
        """Run ``chunk``'s positions through the model into the cache; their logits [n, V]."""
        n = len(chunk.tokens)
        if n == 0:
            raise SessionError("append: expected at least one token, got an empty chunk")
        ring_chunk = any(c.ring for c in self.caches)
        if ring_chunk and n > self.cfg.max_chunk_tokens:
            raise SessionError(f"append: a chunk of {n} positions exceeds max_chunk_tokens="
                               f"{self.cfg.max_chunk_tokens}, which the local layers' ring is sized for")
        for cache in self.caches:
            cache.reserve(self.length + n)
        tokens, dmel, patches = chunk.arrays()
        dev = self.device
        hidden, logits = self.model.forward_cached(
            torch.from_numpy(tokens).to(dev),
            torch.from_numpy(dmel.copy()).to(dev) if len(dmel) else None,
            torch.from_numpy(patches.copy()).to(dev) if len(patches) else None,
            self.caches, self.length,
        )
        self.length += n
        if self.audio:
            self.hidden.append(hidden[-1])
        if self.trace is not None:
            self.trace.append((chunk, logits.clone()))
        return logits

    def _pick(self, logits: torch.Tensor) -> int:
        masked = logits.float() + self.output_mask
        # Below GREEDY_BELOW the scaled logits would overflow float32 (inf - inf = nan): greedy, as sglang does.
        if self.temperature < GREEDY_BELOW:
            return int(torch.argmax(masked))
        if not math.isfinite(self.temperature):
            raise SessionError(f"temperature: expected a finite number, got {self.temperature!r}")
        z = masked / self.temperature
        p = det_exp(z - z.max())
        total = float(p.sum())
        if not (math.isfinite(total) and total > 0) or not bool(torch.isfinite(p).all()):
            raise SessionError(f"temperature: sampling at {self.temperature!r} gave no valid probabilities "
                               "(the logits are not finite)")
        return int(torch.multinomial(p.cpu(), 1, generator=self.generator))

    def step_tokens(self, step_input: StepInput) -> list[int]:
        """Append one tick's inputs and decode its output tokens (up to K, ending early at END)."""
        return self.step_encoded(self.encoder.encode(step_input))

    def step_encoded(self, enc: EncodedTick, max_new_tokens: int | None = None,
                     on_token: Callable[[int], None] | None = None, *, stop_at_end: bool = True) -> list[int]:
        """Append an already encoded tick (a :class:`TickEncoder` chunk, without the carried token: it is
        prepended here) and decode up to ``max_new_tokens`` (default K) outputs, ending early at END: the
        server side of a step, whose client owns the encoder. ``on_token(token)`` is called after each
        decoded token; an exception from it ends the turn half-way (undo it with :meth:`rollback`).
        ``stop_at_end=False`` decodes exactly ``max_new_tokens`` (sglang's ``ignore_eos``)."""
        limit = self.cfg.outputs_per_tick if max_new_tokens is None else max_new_tokens
        if limit < 1:
            raise SessionError(f"max_new_tokens: expected ≥ 1, got {limit}")
        chunk = EncodedTick(([self.carry] if self.carry is not None else []) + enc.tokens, enc.dmel, enc.patches)
        self.hidden = []
        logits = self.append(chunk)[-1]
        out: list[int] = []
        while True:
            token = self._pick(logits)
            out.append(token)
            if on_token is not None:
                on_token(token)
            if (token == END and stop_at_end) or len(out) == limit:
                break
            logits = self.append(EncodedTick([token]))[-1]
        self.carry = out[-1]
        self.ticks += 1
        return out

    def step(self, step_input: StepInput) -> StepOutput:
        """Append one tick's inputs and decode that tick's :class:`StepOutput` (with ``audio``: the next
        window's four dMel frames from the flow head, 80 level bytes each)."""
        out = self.decoder.decode(self.step_tokens(step_input))
        if not self.audio:
            return out
        return msgspec.structs.replace(out, audio=self.sample_audio())

    def sample_audio(self) -> bytes:
        """The flow head's frames for the step just taken, as dMel levels [4, 80] (uint8 bytes). The noise is
        drawn from (seed, tick) alone, so a restored or replayed session samples the same frames."""
        from microturn.audio.dmel import levels_from_unit

        if not self.hidden:
            raise SessionError("sample_audio: no step taken yet (or the session was made without audio=True)")
        cond = torch.stack([self.hidden[r] for r in flow_condition_rows(len(self.hidden))])
        gen = torch.Generator(device=self.device).manual_seed((self.seed * 1_000_003 + self.ticks) % (1 << 63))
        with torch.no_grad():
            unit = self.model.flow.sample(cond.float(), generator=gen).cpu().numpy()
        return levels_from_unit(unit).tobytes()

    # --- state -----------------------------------------------------------------------------------------------

    def mark(self) -> TurnMark:
        """The position to :meth:`rollback` to if the next turn fails or is aborted."""
        return TurnMark(self.length, self.carry, self.ticks, self.generator.get_state())

    def rollback_room(self) -> int:
        """The most positions a turn may write and still be undone by :meth:`rollback`: a ring of R blocks
        holds position p in slot p mod (R*block_size), so a turn's write at p lands on p - R*block_size,
        which the next query (at the rolled-back length L, seeing [L - window + 1, L]) must not need."""
        rings = [c.n_blocks * c.block_size for c in self.caches if c.ring]
        return min(rings) - self.cfg.window + 1 if rings else 1 << 62

    def rollback(self, mark: TurnMark) -> None:
        """Undo the turns after ``mark`` (a failed or aborted one), bit for bit, without copying the cache:
        positions at or past ``mark.length`` are simply written again by the next turn (global layers hold
        each position in its own slot), and the ring of the local layers is sized window + max chunk + one
        block, so a turn writing at most :meth:`rollback_room` positions never overwrote a key the window
        still needs. Raises :class:`SessionError` if the turn wrote more than that."""
        written = self.length - mark.length
        if written < 0:
            raise SessionError(f"rollback: the mark (length {mark.length}) is ahead of the session ({self.length})")
        if written > self.rollback_room():
            raise SessionError(f"rollback: the turn wrote {written} positions, more than the {self.rollback_room()} "
                               "the local layers' ring can undo; restore a snapshot instead")
        self.length, self.carry, self.ticks = mark.length, mark.carry, mark.ticks
        self.generator.set_state(mark.rng)

    def snapshot(self) -> SessionSnapshot:
        """A deep copy of the whole session state (cache, position, carry, stream state, sampler)."""
        return SessionSnapshot(
            config=self.cfg,
            length=self.length,
            carry=self.carry,
            keys=tuple(c.k.clone() for c in self.caches),
            values=tuple(c.v.clone() for c in self.caches),
            tables=tuple(c.table.clone() for c in self.caches),
            encoder=self.encoder.state(),
            decoder=self.decoder.state(),
            rng=self.generator.get_state(),
            ticks=self.ticks,
        )

    def restore(self, snap: SessionSnapshot) -> None:
        """Put back a :meth:`snapshot` of a session over the same model configuration, bit for bit."""
        if snap.config != self.cfg:
            raise SessionError("restore: the snapshot was taken with another model configuration")
        if len(snap.keys) != len(self.caches):
            raise SessionError(f"restore: expected {len(self.caches)} layers, the snapshot has {len(snap.keys)}")
        for cache, k, v, t in zip(self.caches, snap.keys, snap.values, snap.tables, strict=True):
            if cache.ring and k.shape == cache.k.shape:
                cache.k.copy_(k)  # keep the preallocated ring
                cache.v.copy_(v)
            else:
                cache.k, cache.v = k.clone(), v.clone()
            cache.table = t.clone()
        self.length, self.carry, self.ticks = snap.length, snap.carry, snap.ticks
        self.encoder.load(snap.encoder)
        self.decoder.load(snap.decoder)
        self.generator.set_state(snap.rng)

    def memory_bytes(self) -> int:
        """Bytes held by the session's caches (keys, values, block tables)."""
        return sum(c.memory_bytes() for c in self.caches)
