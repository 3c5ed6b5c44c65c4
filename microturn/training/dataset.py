"""Training data for the interaction model: each dialog becomes one token stream laid out exactly as a
:class:`~microturn.model.kv_session.KVSession` sees it, cropped into fixed-length windows and batched.

Per tick the stream holds the :class:`TickEncoder` input positions, then the :class:`OutputPacker` tokens the
oracle's answer packs into (at most K, END-terminated when fewer). A session appends the same positions: its
step appends the previous tick's last output (carried) plus this tick's inputs, then decodes the K slots, so
concatenating every appended chunk gives this stream. ``target_mask`` marks the output positions.

Windows start and end on tick boundaries, are at most ``seq_len`` positions long, and overlap by about half
(a stride of ``seq_len // 2``) so that most outputs are also trained with a long left context, as local
layers see at inference.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from microturn.model.config import ModelConfig
from microturn.model.layout import (
    ASSISTANT,
    DMEL,
    FLOOR,
    MAX_INPUT_HEADER,
    PAD,
    PATCH,
    SPEAKING,
    EncodedTick,
    OutputDecoder,
    OutputPacker,
    TickEncoder,
)

from .corpus import TickExample

__all__ = ["Batch", "DialogStream", "WindowDataset", "encode_dialog", "plan_windows"]


@dataclass
class DialogStream:
    """One dialog's stream: tokens [n], target_mask [n], dMel frames [n_dmel, 80], patches [n_patch, 40, 40, 3],
    the start position of each tick, and the packed target tokens of each tick (for evaluation)."""

    tokens: np.ndarray
    target_mask: np.ndarray
    dmel: np.ndarray
    patches: np.ndarray
    tick_starts: np.ndarray
    tick_outputs: list[list[int]]

    def __post_init__(self) -> None:
        # frames / patches before each position, so a window slices its own rows without a scan
        self.dmel_before = np.concatenate([[0], np.cumsum(self.tokens == DMEL)])
        self.patch_before = np.concatenate([[0], np.cumsum(self.tokens == PATCH)])

    def __len__(self) -> int:
        return len(self.tokens)


def encode_dialog(ticks: Sequence[TickExample], cfg: ModelConfig, *, lag_headers: float = 0.0,
                  seed: int = 0) -> DialogStream:
    """Lay out a dialog's ticks as the session stream (fresh encoder and packer FIFOs, as a new session).

    ``lag_headers``: the oracle's world reacted to its words at once, but the slots release a word only at its
    space (often a tick later), and controls that spill past a tick's slots hold its text back, so a model's
    words come out later than the oracle's did, and meanwhile its world shows it silent. On such ticks, with
    this probability (drawn from ``seed``), the header shows the assistant silent, so the model learns that
    finishing what it started does not depend on being heard yet. A corpus built with ``--slots`` already
    shows the model's world and needs none."""
    encoder, packer = TickEncoder(cfg.max_input_tokens), OutputPacker(cfg.outputs_per_tick)
    seq, mask, starts, outs = EncodedTick([]), [], [], []
    rng = random.Random(seed)
    decoder, said, released = OutputDecoder(), 0, 0  # words of the utterance in progress
    for example in ticks:
        starts.append(len(seq.tokens))
        # The oracle's world already hears what is still to be spelled out here: an utterance none of whose
        # words the slots have released yet (a word goes out at its space, often a tick after
        # the oracle said it). Once a word is out, the model's world hears it speak too.
        enc = encoder.encode(example.input)
        if lag_headers:
            behind = bool(packer.controls) or (said > 0 and released == 0)
            if behind and rng.random() < lag_headers:
                enc.tokens[:MAX_INPUT_HEADER] = _silent_assistant(enc.tokens[:MAX_INPUT_HEADER])
        out = packer.pack(example.output)
        if lag_headers:  # the words said and released so far are only needed to lag headers
            said += len(example.output.text.split())
            released += len(decoder.decode(out).text.split())
            if {"end_utterance", "silence"} & set(example.output.controls):
                said = released = 0
        seq.extend(enc)
        seq.extend(EncodedTick(out))
        mask += [False] * len(enc.tokens) + [True] * len(out)
        outs.append(out)
    tokens, dmel, patches = seq.arrays()
    return DialogStream(tokens, np.asarray(mask, dtype=bool), dmel, patches, np.asarray(starts, dtype=np.int64), outs)


def plan_windows(tick_starts: np.ndarray, length: int, seq_len: int, stride: int | None = None) -> list[tuple[int, int]]:
    """(start, end) position ranges of at most ``seq_len`` covering the stream, on tick boundaries, with a
    stride of about ``stride`` (default ``seq_len // 2``; ``seq_len`` gives non-overlapping windows). A single tick longer than ``seq_len`` (not possible with the layout's
    per-tick bounds unless seq_len is tiny) is cut at ``seq_len``."""
    bounds = np.append(tick_starts, length)
    out: list[tuple[int, int]] = []
    start = 0
    while start < length:
        i = int(np.searchsorted(bounds, start + seq_len, side="right")) - 1
        end = int(bounds[i]) if bounds[i] > start else min(start + seq_len, length)
        out.append((start, end))
        if end >= length:
            break
        j = int(np.searchsorted(bounds, start + (stride or seq_len // 2), side="right")) - 1
        nxt = int(bounds[j])
        start = nxt if nxt > start else end
    return out


@dataclass
class Batch:
    """A padded batch: tokens [B, T] (PAD after each window's end), target_mask [B, T], the dMel frames and
    patches of the DMEL / PATCH positions in row-major order (None when there are none)."""

    tokens: torch.Tensor
    target_mask: torch.Tensor
    dmel: torch.Tensor | None
    patches: torch.Tensor | None

    @property
    def n_tokens(self) -> int:
        """Non-padding positions."""
        return int((self.tokens != PAD).sum())


def _silent_assistant(header: list[int]) -> list[int]:
    """A tick header (TICK, floor, user, assistant, speaking, vad) as a world that has not heard the assistant
    yet would show it."""
    tick, floor, user, assistant, _speaking, vad = header
    if floor == FLOOR["assistant"]:
        floor = FLOOR["none"]
    if assistant in (ASSISTANT["speaking"], ASSISTANT["backchanneling"]):
        assistant = ASSISTANT["silent"]
    return [tick, floor, user, assistant, SPEAKING[False], vad]


class WindowDataset:
    """All windows of a corpus, served in a seeded order: epoch ``e`` is a permutation drawn from (seed, e), so
    a data position (epoch, index) fully determines the next batch (what resuming restores)."""

    def __init__(self, dialogs: Iterable[Sequence[TickExample]], cfg: ModelConfig, seq_len: int, *,
                 lag_headers: float = 0.0) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len: expected ≥ 2, got {seq_len}")
        self.cfg, self.seq_len = cfg, seq_len
        self.streams = [encode_dialog(d, cfg, lag_headers=lag_headers, seed=i)
                        for i, d in enumerate(dl for dl in dialogs if len(dl))]
        if not self.streams:
            raise ValueError("the corpus holds no ticks")
        self.windows = [(i, s, e) for i, st in enumerate(self.streams)
                        for s, e in plan_windows(st.tick_starts, len(st), seq_len)]

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def n_ticks(self) -> int:
        """Ticks over all dialogs."""
        return sum(len(s.tick_starts) for s in self.streams)

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """The window order of ``epoch``."""
        return np.random.default_rng([seed, epoch]).permutation(len(self.windows))

    def eval_windows(self) -> list[tuple[int, int, int]]:
        """Non-overlapping windows covering every tick once (for evaluation)."""
        return [(i, s, e) for i, st in enumerate(self.streams)
                for s, e in plan_windows(st.tick_starts, len(st), self.seq_len, stride=self.seq_len)]

    def collate(self, windows: Sequence[tuple[int, int, int]]) -> Batch:
        """Pad the windows (dialog, start, end) to ``seq_len`` and stack them."""
        tokens = np.full((len(windows), self.seq_len), PAD, dtype=np.int64)
        mask = np.zeros((len(windows), self.seq_len), dtype=bool)
        dmel, patches = [], []
        for row, (i, s, e) in enumerate(windows):
            st = self.streams[i]
            tokens[row, :e - s] = st.tokens[s:e]
            mask[row, :e - s] = st.target_mask[s:e]
            dmel.append(st.dmel[st.dmel_before[s]:st.dmel_before[e]])
            patches.append(st.patches[st.patch_before[s]:st.patch_before[e]])
        d, p = np.concatenate(dmel), np.concatenate(patches)
        return Batch(torch.from_numpy(tokens), torch.from_numpy(mask),
                     torch.from_numpy(d) if len(d) else None, torch.from_numpy(p) if len(p) else None)

    def batch_at(self, seed: int, epoch: int, index: int, batch_size: int) -> tuple[Batch, int, int]:
        """The batch at data position (epoch, index) and the position after it. A batch never spans epochs:
        the tail of an epoch shorter than ``batch_size`` is skipped (a corpus with fewer windows than
        ``batch_size`` gives all its windows each step)."""
        batch_size = min(batch_size, len(self.windows))
        if index + batch_size > len(self.windows):
            epoch, index = epoch + 1, 0
        order = self.order(seed, epoch)
        picks = order[index:index + batch_size]
        return self.collate([self.windows[w] for w in picks.tolist()]), epoch, index + batch_size
