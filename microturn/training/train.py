"""The training loop of the interaction model: AdamW with warmup then cosine decay, gradient clipping, a time
budget and a step cap, a progress bar, resumable checkpoints, and held-out agreement with the oracle.

**Resume.** Every ``save_every`` steps (and when the time budget runs out) the whole training state is written
atomically to ``<out>.train.pt``: model, optimizer and scheduler state, the step, the data position (epoch,
index into that epoch's seeded window order), torch's RNG state and the loss history. Resuming restores it
and continues as if never stopped (bitwise on the same machine and thread count: every op here is
deterministic on CPU). Resuming a finished run does nothing.

**Outputs.** When the run stops (finished, or out of time) the weights and manifest go to ``<out>`` through
:func:`~microturn.model.local.save_checkpoint`: config, data seed, training time, held-out metrics.

**Held-out metrics** (:func:`evaluate`): per tick, the model's greedy choice for each of the K output slots
(teacher-forced on the oracle's stream) is decoded with :class:`OutputDecoder` and compared with the decode of
the oracle's own packed tokens (what a perfect model emits): control set, text presence, and both.
:func:`evaluate_sessions` measures the same on free-running greedy sessions (the inference path), which is
stricter: the model's own earlier outputs are in its context.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from microturn.model.config import PRESETS, ModelConfig
from microturn.model.kv_session import KVSession
from microturn.model.layout import END, OUTPUT_TOKENS, OutputDecoder, OutputPacker
from microturn.model.local import save_checkpoint
from microturn.model.protocol import StepOutput
from microturn.model.torch_model import InteractionModel, parameter_count

from .corpus import TickExample
from .dataset import WindowDataset

__all__ = ["TrainConfig", "TrainError", "TrainResult", "evaluate", "evaluate_sessions", "state_path", "train"]

STATE_FORMAT = "microturn-train-state/1"


class TrainError(ValueError):
    """Bad training arguments, or a training state that does not belong to this run."""


@dataclass(frozen=True)
class TrainConfig:
    """What a run is: the model preset, data, schedule and budget. Fields that change the trajectory (all but
    ``minutes``, ``save_every`` and ``eval_windows``) must match when resuming."""

    config: str = "embedded"
    steps: int = 1000
    batch: int = 8
    lr: float = 3e-3
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    clip: float = 1.0
    seed: int = 0
    seq_len: int = 0
    """Window length in positions; 0 means 1.5 × the config's attention window."""
    minutes: float | None = None
    save_every: int = 100
    eval_windows: int = 0
    """Held-out windows to evaluate (0: all)."""
    session_ticks: int = 0
    """Held-out ticks to run through free-running greedy sessions (:func:`evaluate_sessions`; 0: none)."""
    lag_headers: float = 0.0
    """Probability that a tick spent spelling out a payload shows the assistant silent in its header (see
    :func:`~microturn.training.dataset.encode_dialog`); a property of the training windows."""
    context_noise: float = 0.0
    """Fraction of the output tokens in the context replaced by a random output token (the targets stay the
    oracle's): a cheap guard against exposure bias, since a session's context holds its own outputs."""

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first bad field."""
        if self.config not in PRESETS:
            raise TrainError(f"config: expected one of {sorted(PRESETS)}, got {self.config!r}")
        for name in ("steps", "batch", "save_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TrainError(f"{name}: expected a positive integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainError(f"lr: expected a positive number, got {self.lr!r}")
        if min(self.warmup, self.seq_len, self.eval_windows, self.session_ticks) < 0:
            raise TrainError(f"warmup, seq_len, eval_windows and session_ticks must be ≥ 0, got {self.warmup}, "
                             f"{self.seq_len}, {self.eval_windows}, {self.session_ticks}")
        if self.seq_len == 1:
            raise TrainError("seq_len: expected 0 (automatic) or ≥ 2, got 1")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TrainError(f"min_lr_ratio: expected a value in [0, 1], got {self.min_lr_ratio!r}")
        if not 0 <= self.lag_headers <= 1:
            raise TrainError(f"lag_headers: expected a probability in [0, 1], got {self.lag_headers!r}")
        if not 0 <= self.context_noise < 1:
            raise TrainError(f"context_noise: expected a fraction in [0, 1), got {self.context_noise!r}")
        if self.minutes is not None and not self.minutes > 0:
            raise TrainError(f"minutes: expected a positive number, got {self.minutes!r}")

    def model_config(self) -> ModelConfig:
        """The preset's :class:`ModelConfig`."""
        return PRESETS[self.config]()

    def window_len(self) -> int:
        """Training window length in positions."""
        return self.seq_len or self.model_config().window * 3 // 2

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share."""
        d = asdict(self)
        for k in ("minutes", "save_every", "eval_windows", "session_ticks"):
            d.pop(k)
        return d


@dataclass
class TrainResult:
    """How a call to :func:`train` ended."""

    steps: int
    finished: bool
    seconds: float
    """Training time over all sessions of this run (resumes included)."""
    tokens: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    noop: bool = False
    """A resumed run that had already finished: nothing was done."""


def state_path(out: str | os.PathLike[str]) -> Path:
    """Where the resumable training state of the checkpoint ``out`` lives."""
    return Path(out).with_suffix(".train.pt")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``steps``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _controls(out: StepOutput) -> frozenset[str]:
    return frozenset(out.controls)


@torch.no_grad()
def evaluate(model: InteractionModel, data: WindowDataset, *, max_windows: int = 0, batch: int = 8) -> dict[str, float]:
    """Held-out per-tick agreement with the oracle and the output-token loss, over non-overlapping windows.

    Each tick's K slots are decoded greedily (the argmax over the output vocabulary at each slot, given the
    oracle's stream before it) and compared, after :class:`OutputDecoder`, with the oracle's packed tokens
    decoded the same way."""
    was_training = model.training
    model.eval()
    allowed = torch.full((model.cfg.vocab_size,), float("-inf"))
    allowed[list(OUTPUT_TOKENS)] = 0.0
    windows = data.eval_windows()
    if max_windows:
        windows = windows[:max_windows]
    ticks = agree = ctrl = text = 0
    ce_sum, ce_n = 0.0, 0
    for b in range(0, len(windows), batch):
        chunk = windows[b:b + batch]
        bt = data.collate(chunk)
        out = model(bt.tokens, bt.dmel, bt.patches)
        logits = out.logits[:, :-1] + allowed
        targets, mask = bt.tokens[:, 1:], bt.target_mask[:, 1:]
        if mask.any():
            ce_sum += float(torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum"))
            ce_n += int(mask.sum())
        # pred[r, p] is the greedy token for position p + 1 of row r
        pred = logits.argmax(-1).tolist()
        for row, (i, s, e) in enumerate(chunk):
            st = data.streams[i]
            bounds = [*st.tick_starts.tolist(), len(st)]
            truth_dec, pred_dec = OutputDecoder(), OutputDecoder()
            for t in range(int(st.tick_starts.searchsorted(s)), len(bounds) - 1):
                if bounds[t + 1] > e:
                    break
                target = st.tick_outputs[t]
                out_pos = bounds[t + 1] - len(target) - s  # the tick's K slots close it
                guess: list[int] = []
                for j in range(len(target)):
                    guess.append(pred[row][out_pos + j - 1])
                    if guess[-1] == END:
                        break
                c, x = _compare(truth_dec.decode(target), pred_dec.decode(guess))
                ticks += 1
                ctrl += c
                text += x
                agree += c and x
    if was_training:
        model.train()
    n = max(ticks, 1)
    return {"ticks": ticks, "tick_agreement": agree / n, "control_agreement": ctrl / n, "text_agreement": text / n,
            "output_ce": ce_sum / max(ce_n, 1)}


def _compare(want: StepOutput, got: StepOutput) -> tuple[bool, bool]:
    return _controls(want) == _controls(got), bool(want.text) == bool(got.text)


@torch.no_grad()
def evaluate_sessions(model: InteractionModel, dialogs: Iterable[Sequence[TickExample]], max_ticks: int) -> dict[str, float]:
    """Per-tick agreement of free-running greedy sessions (the inference path: :class:`KVSession`, its own
    earlier outputs in context) on the recorded held-out inputs, for the first ``max_ticks`` ticks. Open loop:
    the inputs (dialog state, playback) are those the oracle's behaviour produced."""
    was_training = model.training
    model.eval()
    k = model.cfg.outputs_per_tick
    ticks = agree = ctrl = text = 0
    for dialog in dialogs:
        if ticks >= max_ticks:
            break
        session, packer, truth = KVSession(model), OutputPacker(k), OutputDecoder()
        for example in dialog:
            if ticks >= max_ticks:
                break
            c, x = _compare(truth.decode(packer.pack(example.output)), session.step(example.input))
            ticks += 1
            ctrl += c
            text += x
            agree += c and x
    if was_training:
        model.train()
    n = max(ticks, 1)
    return {"session_ticks": ticks, "session_tick_agreement": agree / n, "session_control_agreement": ctrl / n,
            "session_text_agreement": text / n}


def _perturb(tokens: torch.Tensor, target_mask: torch.Tensor, rate: float, output_ids: torch.Tensor) -> torch.Tensor:
    """``tokens`` with a ``rate`` fraction of the output positions replaced by random output tokens (drawn from
    torch's global generator, which the training state saves, so a resumed run draws the same)."""
    if rate <= 0:
        return tokens
    hit = target_mask & (torch.rand(tokens.shape) < rate)
    if not hit.any():
        return tokens
    out = tokens.clone()
    out[hit] = output_ids[torch.randint(len(output_ids), (int(hit.sum()),))]
    return out


class _Progress:
    """A progress line on stderr: redrawn on a terminal, one line every ``every`` seconds otherwise."""

    def __init__(self, total: int, budget_s: float | None, enabled: bool, every: float = 15.0) -> None:
        self.total, self.budget_s, self.enabled, self.every = total, budget_s, enabled, every
        self.tty = enabled and sys.stderr.isatty()
        self.started = time.perf_counter()
        self.last = -1e9

    def __call__(self, step: int, first_step: int, loss: float, tokens_per_s: float, lr: float, done: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not (self.tty or done or now - self.last >= self.every):
            return
        self.last = now
        elapsed = now - self.started
        rate = (step - first_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        if self.budget_s is not None:
            eta = min(eta, max(0.0, self.budget_s - elapsed))
        width = 24
        fill = round(width * step / self.total)
        text = (f"[{'#' * fill}{'.' * (width - fill)}] step {step}/{self.total} loss {loss:.4f} lr {lr:.2e} "
                f"{tokens_per_s:,.0f} tok/s ETA {eta / 60:.1f} min")
        if self.tty:
            sys.stderr.write("\r" + text + ("\n" if done else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves half a state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(
    cfg: TrainConfig,
    corpus: WindowDataset,
    out: str | os.PathLike[str],
    *,
    heldout: WindowDataset | None = None,
    heldout_dialogs: Sequence[Sequence[TickExample]] | None = None,
    resume: bool = False,
    progress: bool = True,
    manifest_extra: dict[str, Any] | None = None,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume training) and write the checkpoint ``out`` when the run stops. ``heldout`` gives the
    teacher-forced metrics (:func:`evaluate`), ``heldout_dialogs`` the session metrics (with ``session_ticks``).

    ``stop_after`` ends this call after that many steps as if the time budget ran out (tests of resuming).
    ``log`` receives one-line notes (the CLI prints them to stderr)."""
    cfg.validate()
    note = log or (lambda _msg: None)
    mcfg = cfg.model_config()
    if corpus.cfg != mcfg or corpus.seq_len != cfg.window_len():
        raise TrainError("the dataset was built for another model config or window length than this run's")
    out = Path(out).with_suffix(".pt")
    spath = state_path(out)
    if spath.exists() and not resume:
        raise TrainError(f"{spath} exists: pass --resume to continue that run, or choose another --out")
    torch.manual_seed(cfg.seed)
    model = InteractionModel(mcfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    step, epoch, index, seconds, tokens = 0, 0, 0, 0.0, 0
    losses: list[tuple[int, float]] = []
    if resume and spath.exists():
        state = torch.load(spath, map_location="cpu", weights_only=False)
        if state.get("format") != STATE_FORMAT:
            raise TrainError(f"{spath}: not a training state of this version (format {state.get('format')!r})")
        if state["train"] != cfg.identity():
            diff = {k: (state["train"].get(k), v) for k, v in cfg.identity().items() if state["train"].get(k) != v}
            raise TrainError(f"{spath}: --resume with other settings than the saved run (saved, given): {diff}")
        if state.get("data") != corpus_signature(corpus):
            raise TrainError(f"{spath}: --resume with another training corpus than the saved run's")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, epoch, index = state["step"], state["epoch"], state["index"]
        seconds, tokens, losses = state["seconds"], state["tokens"], state["losses"]
        torch.set_rng_state(state["rng"])
        if step >= cfg.steps:
            note(f"{spath}: the run already finished at step {step}; nothing to do")
            return TrainResult(step, True, seconds, tokens, losses, state.get("metrics", {}), out, noop=True)
        note(f"resuming at step {step} (epoch {epoch}, window {index})")
    elif resume:
        note(f"{spath} not found: starting a new run")
    note(f"model {cfg.config}: {parameter_count(model):,} parameters; {len(corpus)} windows of ≤ {corpus.seq_len} "
         f"positions from {len(corpus.streams)} dialogs ({corpus.n_ticks} ticks)")

    def snapshot(metrics: dict[str, float] | None = None) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "train": cfg.identity(), "data": corpus_signature(corpus),
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": step, "epoch": epoch, "index": index, "seconds": seconds, "tokens": tokens,
                "losses": losses, "rng": torch.get_rng_state(), "metrics": metrics or {}}

    output_ids = torch.tensor(sorted(OUTPUT_TOKENS))
    budget = None if cfg.minutes is None else cfg.minutes * 60.0
    bar = _Progress(cfg.steps, budget, progress)
    first_step, started = step, time.perf_counter()
    ema: float | None = None
    run_tokens = 0
    model.train()
    stopped_early = False
    while step < cfg.steps:
        if budget is not None and time.perf_counter() - started >= budget:
            stopped_early = True
            break
        if stop_after is not None and step - first_step >= stop_after:
            stopped_early = True
            break
        t0 = time.perf_counter()
        batch, epoch, index = corpus.batch_at(cfg.seed, epoch, index, cfg.batch)
        inputs = _perturb(batch.tokens, batch.target_mask, cfg.context_noise, output_ids)
        loss, parts = model.loss(inputs, batch.target_mask, batch.dmel, batch.patches, targets=batch.tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        sched.step()
        step += 1
        seconds += time.perf_counter() - t0
        n = batch.n_tokens
        tokens += n
        run_tokens += n
        ema = parts["ce"] if ema is None else 0.95 * ema + 0.05 * parts["ce"]
        if step % 10 == 0 or step == 1:
            losses.append((step, round(parts["ce"], 5)))
        bar(step, first_step, ema, run_tokens / max(time.perf_counter() - started, 1e-9), sched.get_last_lr()[0])
        if step % cfg.save_every == 0 and step < cfg.steps:
            _save_state(spath, snapshot())
    finished = step >= cfg.steps
    if ema is not None and losses[-1][0] != step:
        losses.append((step, round(parts["ce"], 5)))
    if ema is not None:
        bar(step, first_step, ema, run_tokens / max(time.perf_counter() - started, 1e-9), sched.get_last_lr()[0],
            done=True)
    metrics: dict[str, float] = {}
    if heldout is not None:
        t0 = time.perf_counter()
        metrics = evaluate(model, heldout, max_windows=cfg.eval_windows, batch=cfg.batch)
        note(f"held-out ({metrics['ticks']} ticks, {time.perf_counter() - t0:.0f} s): "
             f"tick agreement {metrics['tick_agreement']:.1%}, controls {metrics['control_agreement']:.1%}, "
             f"text presence {metrics['text_agreement']:.1%}, output CE {metrics['output_ce']:.3f}")
    if heldout_dialogs is not None and cfg.session_ticks:
        t0 = time.perf_counter()
        sm = evaluate_sessions(model, heldout_dialogs, cfg.session_ticks)
        metrics.update(sm)
        note(f"held-out greedy sessions ({sm['session_ticks']} ticks, {time.perf_counter() - t0:.0f} s): "
             f"tick agreement {sm['session_tick_agreement']:.1%}, controls {sm['session_control_agreement']:.1%}, "
             f"text presence {sm['session_text_agreement']:.1%}")
    _save_state(spath, snapshot(metrics))
    doc = {"training": {**cfg.identity(), "steps_done": step, "finished": finished, "seconds": round(seconds, 1),
                        "tokens": tokens, "torch_threads": torch.get_num_threads(),
                        "losses": losses[-50:] if len(losses) > 50 else losses},
           "heldout_metrics": metrics, **(manifest_extra or {})}
    path = save_checkpoint(model, out, doc)
    if stopped_early and not finished:
        note(f"stopped at step {step}/{cfg.steps} (budget); run again with --resume to continue")
    return TrainResult(step, finished, seconds, tokens, losses, metrics, path)


def corpus_signature(data: WindowDataset) -> list[int]:
    """A cheap fingerprint of a dataset (dialogs, windows, positions) that a resumed run must match."""
    return [len(data.streams), len(data.windows), sum(len(s) for s in data.streams)]
