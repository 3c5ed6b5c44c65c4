"""Audio out: train the flow head on the assistant's own speech, the trunk frozen (``microturn train-flow``).

Targets: held-out-free training dialogs run with the oracle and the output mixer voicing it (espeak-ng, as
a session hears it); the assistant's whole signal is cut into the same 50 ms frames as dMel, as continuous
log10 mel magnitudes clamped to dMel's range and scaled to [-1, 1]. The step at tick k is answered by the
four frames of window k + 1 (what plays right after it).

Conditions: a step's hidden states are those of the last input position and of each output slot but the
last (what a :class:`~microturn.model.kv_session.KVSession` has computed when its step ends: the last output is
carried into the next chunk); frame j of the tick takes the j-th (the last one when the tick has fewer). The
teacher-forced pass gives them here; the session gives them at inference, where
``KVSession(audio=True)`` samples the frames (a few Euler steps) and returns them as dMel levels in
``StepOutput.audio``.

The trunk is frozen, so this stage changes neither the text nor the control decisions of the checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from microturn.audio.dmel import DMEL, frame_magnitudes, mel_magnitudes, unit_from_mel
from microturn.model.kv_session import FLOW_FRAMES, flow_condition_rows
from microturn.model.torch_model import InteractionModel

from .corpus import TickExample
from .dataset import encode_dialog

__all__ = ["FRAMES_PER_TICK", "AudioDialog", "FlowResult", "flow_pairs", "record_audio_dialogs", "train_flow",
           "unit_frames"]

FRAMES_PER_TICK = FLOW_FRAMES
"""dMel frames per 200 ms window (50 ms hop)."""

def unit_frames(signal: np.ndarray) -> np.ndarray:
    """[frames, 80] float32 in [-1, 1]: log10 mel magnitudes of a 16 kHz float signal, clamped to dMel's range."""
    return unit_from_mel(mel_magnitudes(frame_magnitudes(signal)))


@dataclass
class AudioDialog:
    """One dialog's ticks and, per tick, the [4, 80] target frames of the window after it."""

    ticks: list[TickExample]
    frames: np.ndarray


def record_audio_dialogs(seed: int, count: int, *, late_reply: float = 0.3,
                         progress: Callable[[int, int], None] | None = None) -> list[AudioDialog]:
    """Run ``count`` training-split dialogs of corpus ``seed`` with the mixer voicing the oracle."""
    from microturn.messages import Playout

    from .corpus import run_dialog
    from .dialogs import generate_dialogs

    out = []
    for i, dialog in enumerate(generate_dialogs(seed, count, late_reply=late_reply)):
        ticks, messages = run_dialog(dialog, keep_messages=True, render_audio=True)
        window = 3200
        n = max((t.tick for t in ticks), default=0) + 3
        signal = np.zeros(n * window, dtype=np.float32)
        for m in messages:
            if isinstance(m, Playout) and m.pcm and m.tick < n:
                pcm = np.frombuffer(m.pcm, dtype="<i2").astype(np.float32) / 32768.0
                signal[m.tick * window:m.tick * window + min(len(pcm), window)] = pcm[:window]
        frames = unit_frames(signal).reshape(-1, FRAMES_PER_TICK, DMEL.n_mels)
        targets = np.stack([frames[min(t.tick + 1, len(frames) - 1)] for t in ticks])
        out.append(AudioDialog(ticks, targets))
        if progress is not None:
            progress(i + 1, count)
    return out


def flow_pairs(model: InteractionModel, dialogs: Sequence[AudioDialog]) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditions [N, D], targets [N, 80]) of every frame of every tick, from one teacher-forced pass per
    dialog (no gradient)."""
    conds, targets = [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for d in dialogs:
            st = encode_dialog(d.ticks, model.cfg)
            out = model(torch.tensor(st.tokens)[None], torch.tensor(st.dmel) if len(st.dmel) else None,
                        torch.tensor(st.patches) if len(st.patches) else None)
            hidden = out.hidden[0]
            ends = [*st.tick_starts[1:].tolist(), len(st)]
            for t, end in enumerate(ends):
                n_out = len(st.tick_outputs[t])
                first = end - n_out - 1  # the last input position, then each output slot but the last
                idx = [first + r for r in flow_condition_rows(n_out)]
                conds.append(hidden[idx])
                targets.append(torch.from_numpy(d.frames[t]))
    model.train(was_training)
    return torch.cat(conds), torch.cat(targets)


@dataclass
class FlowResult:
    """What :func:`train_flow` measured: flow-matching loss before and after, and the sampled frames' mean
    absolute error against the targets beside that of always predicting the mean frame, and how often a
    sampled frame is voiced exactly when the target is (the assistant audible or not) beside the majority
    class's rate (all held out)."""

    steps: int
    seconds: float
    loss_before: float
    loss_after: float
    sample_mae: float
    mean_frame_mae: float
    voiced_agreement: float
    voiced_majority: float


def _flow_loss(model: InteractionModel, cond: torch.Tensor, data: torch.Tensor, seed: int) -> float:
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        return float(sum(model.flow.loss(cond[i:i + 4096], data[i:i + 4096], g) * len(cond[i:i + 4096])
                         for i in range(0, len(cond), 4096)) / max(len(cond), 1))


def train_flow(model: InteractionModel, train: tuple[torch.Tensor, torch.Tensor],
               heldout: tuple[torch.Tensor, torch.Tensor], *, steps: int = 2000, batch: int = 512,
               lr: float = 2e-3, seed: int = 0, log: Callable[[str], None] | None = None) -> FlowResult:
    """Train ``model.flow`` alone (Adam, cosine decay) on (condition, frame) pairs; the rest stays frozen."""
    note = log or (lambda _m: None)
    torch.manual_seed(seed)
    cond, data = train
    h_cond, h_data = heldout
    before = _flow_loss(model, h_cond, h_data, seed)
    params = list(model.flow.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.flow.train()
    for step in range(steps):
        pick = torch.randint(len(cond), (batch,), generator=g)
        loss = model.flow.loss(cond[pick], data[pick], g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 500 == 0:
            note(f"flow step {step + 1}/{steps} loss {float(loss.detach()):.4f}")
    model.flow.eval()
    after = _flow_loss(model, h_cond, h_data, seed)
    with torch.no_grad():
        sample = model.flow.sample(h_cond, generator=torch.Generator().manual_seed(seed))
    mae = float((sample - h_data).abs().mean())
    mean_mae = float((data.mean(0, keepdim=True) - h_data).abs().mean())
    voiced, heard = _voiced(sample), _voiced(h_data)
    share = float(heard.float().mean())
    return FlowResult(steps, time.perf_counter() - t0, before, after, mae, mean_mae,
                      float((voiced == heard).float().mean()), max(share, 1 - share))


def _voiced(frames: torch.Tensor) -> torch.Tensor:
    """Frames with audible speech (silence sits at -1, the clamped floor)."""
    return frames.mean(-1) > -0.9
