"""``microturn corpus``: generate the synthetic interaction corpus (or print the statistics of one).
``microturn train``: train the interaction model on such a corpus (torch needed)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from microturn.extras import require

__all__ = ["corpus_command", "flow_command", "register", "train_command"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``corpus`` and ``train`` commands to a ``microturn`` argument parser's subparsers (returns the
    ``corpus`` parser)."""
    corpus = subparsers.add_parser(
        "corpus",
        help="generate the synthetic interaction corpus (randomized dialogs labelled by the scripted policy)",
        description="Generate randomized dialogs, run each in lockstep with the scripted policy as the oracle, "
        "and write what the model sees and what the oracle answered, tick by tick, as shards with a manifest. "
        "Resumable: run it again with the same arguments to finish an interrupted build.",
    )
    corpus.add_argument("--out", required=True, metavar="DIR", help="the corpus folder")
    corpus.add_argument("--dialogs", type=int, default=200, metavar="N", help="number of dialogs (default 200)")
    corpus.add_argument("--seed", type=int, default=0, metavar="S", help="corpus seed (default 0)")
    corpus.add_argument("--heldout", action="store_true", help="the held-out split (seeds disjoint from train)")
    corpus.add_argument("--phrasings", choices=("train", "heldout"), default=None,
                        help="the phrasing split user lines are drawn from (default: the dialog split's own, so "
                        "--heldout uses held-out phrasings; --heldout --phrasings train gives held-out dialogs "
                        "with train phrasings)")
    corpus.add_argument("--per-shard", type=int, default=8, metavar="N", help="dialogs per shard (default 8)")
    corpus.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    corpus.add_argument("--text-fraction", type=float, default=0.25, metavar="F",
                        help="fraction of dialogs in text mode instead of espeak-ng speech (default 0.25)")
    corpus.add_argument("--late-reply", type=float, default=0.0, metavar="P",
                        help="probability that the oracle answers a turn up to 0.6 s late (default 0); the shipped "
                        "model was trained with 0.3, so it learns to answer after a missed first tick")
    corpus.add_argument("--slots", type=int, default=0, metavar="K",
                        help="let the session hear the oracle as a model with K output tokens per tick would be "
                        "heard (words at their spaces, tool calls once spelled out), so the data shows the world "
                        "a model lives in; 0 (default) hears it at once. The shipped model: 6, its outputs_per_tick")
    corpus.add_argument("--stats", action="store_true", help="only print the statistics of the corpus in --out")
    corpus.set_defaults(fn=corpus_command)
    _register_train(subparsers)
    _register_flow(subparsers)
    return corpus


def _register_train(subparsers: Any) -> argparse.ArgumentParser:
    train = subparsers.add_parser(
        "train",
        help="train the interaction model on a corpus (CPU is fine), with resumable checkpoints",
        description="Train the interaction model from scratch on a corpus made by `microturn corpus`, evaluate "
        "per-tick agreement with the oracle on a held-out corpus, and write a checkpoint (weights + manifest). "
        "The training state is saved beside it as <out>.train.pt; --resume continues an interrupted run.",
    )
    train.add_argument("--corpus", required=True, metavar="DIR", help="the training corpus folder")
    train.add_argument("--heldout", metavar="DIR", help="a held-out corpus folder for the final metrics")
    train.add_argument("--out", required=True, metavar="PATH", help="the checkpoint to write (.pt and .json)")
    train.add_argument("--config", default="embedded", metavar="NAME", help="model preset: tiny or embedded "
                       "(default embedded)")
    train.add_argument("--minutes", type=float, metavar="M", help="stop after M minutes of training (resumable)")
    train.add_argument("--steps", type=int, default=1000, metavar="N",
                       help="optimizer steps; the LR schedule spans them (default 1000)")
    train.add_argument("--batch", type=int, default=8, metavar="B", help="windows per step (default 8)")
    train.add_argument("--lr", type=float, default=3e-3, metavar="X", help="peak learning rate (default 3e-3)")
    train.add_argument("--warmup", type=int, default=50, metavar="N", help="warmup steps (default 50)")
    train.add_argument("--seq-len", type=int, default=0, metavar="N",
                       help="window length in positions (default 1.5 x the attention window)")
    train.add_argument("--seed", type=int, default=0, metavar="S", help="init and data-order seed (default 0)")
    train.add_argument("--save-every", type=int, default=100, metavar="N",
                       help="save the resumable state every N steps (default 100)")
    train.add_argument("--eval-windows", type=int, default=0, metavar="N",
                       help="evaluate on at most N held-out windows (default all)")
    train.add_argument("--session-ticks", type=int, default=1000, metavar="N",
                       help="also run the first N held-out ticks through free-running greedy sessions "
                       "(the inference path; ~20-40 ms a tick on CPU; 0: skip; default 1000)")
    train.add_argument("--lag-headers", type=float, default=0.0, metavar="P",
                       help="probability that a tick whose words the slots have not released yet shows the "
                       "assistant silent, as a model's own world does (default 0; a corpus built with --slots "
                       "needs none)")
    train.add_argument("--context-noise", type=float, default=0.0, metavar="F",
                       help="fraction of output tokens in the context replaced by random ones, targets kept "
                       "(robustness to the model's own mistakes; default 0)")
    train.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: torch's)")
    train.add_argument("--resume", action="store_true", help="continue the run saved beside --out")
    train.set_defaults(fn=train_command)
    return train


def _register_flow(subparsers: Any) -> argparse.ArgumentParser:
    flow = subparsers.add_parser(
        "train-flow",
        help="train a checkpoint's flow head (audio out) on the oracle's voiced speech, the trunk frozen",
        description="Run training-split dialogs with the output mixer voicing the oracle, and train the flow "
        "head alone to produce the next window's dMel frames from the trunk's states. Writes a new checkpoint "
        "whose manifest gains a 'flow' entry; text and control decisions are unchanged.",
    )
    flow.add_argument("--checkpoint", required=True, metavar="PATH", help="the trained checkpoint to extend")
    flow.add_argument("--out", required=True, metavar="PATH", help="the checkpoint to write (may be the same)")
    flow.add_argument("--dialogs", type=int, default=240, metavar="N", help="dialogs to voice (default 240)")
    flow.add_argument("--heldout", type=int, default=24, metavar="N", help="of them, kept for the metrics "
                      "(default 24)")
    flow.add_argument("--seed", type=int, default=3, metavar="S", help="corpus seed (default 3)")
    flow.add_argument("--steps", type=int, default=3000, metavar="N", help="optimizer steps (default 3000)")
    flow.set_defaults(fn=flow_command)
    return flow


def flow_command(args: argparse.Namespace) -> int:
    """Carry out ``microturn train-flow``; returns the exit status."""
    require("torch", "torch", "microturn train-flow")
    from microturn.model.local import CheckpointError, load_checkpoint, save_checkpoint

    from .flow import flow_pairs, record_audio_dialogs, train_flow

    if not 0 < args.heldout < args.dialogs:
        print(f"error: --heldout: expected 0 < N < --dialogs ({args.dialogs}), got {args.heldout}", file=sys.stderr)
        return 2
    try:
        model, manifest = load_checkpoint(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar = _Bar()
    t0 = time.perf_counter()
    dialogs = record_audio_dialogs(args.seed, args.dialogs, progress=lambda done, total: bar(done, total, 0))
    cut = args.dialogs - args.heldout
    train, held = flow_pairs(model, dialogs[:cut]), flow_pairs(model, dialogs[cut:])
    print(f"voiced {args.dialogs} dialogs: {len(train[0]):,} training frames, {len(held[0]):,} held out "
          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    result = train_flow(model, train, held, steps=args.steps, log=lambda m: print(m, file=sys.stderr))
    doc = {k: v for k, v in manifest.items() if k not in ("format", "config", "sha256", "bytes")}
    doc["flow"] = {"seed": args.seed, "dialogs": args.dialogs, "heldout_dialogs": args.heldout,
                   "steps": result.steps, "seconds": round(result.seconds, 1),
                   "heldout_loss_before": round(result.loss_before, 4), "heldout_loss": round(result.loss_after, 4),
                   "sample_mae": round(result.sample_mae, 4), "mean_frame_mae": round(result.mean_frame_mae, 4),
                   "voiced_agreement": round(result.voiced_agreement, 4),
                   "voiced_majority": round(result.voiced_majority, 4)}
    path = save_checkpoint(model, args.out, doc)
    print(f"flow head: held-out loss {result.loss_before:.3f} -> {result.loss_after:.3f}; sampled frames voiced "
          f"when the oracle's are {result.voiced_agreement:.1%} of the time (majority {result.voiced_majority:.1%}); "
          f"wrote {path}")
    return 0


class _Bar:
    """A progress bar on stderr: a redrawn line on a terminal, a line every 10 % otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self.last = -1

    def __call__(self, done: int, total: int, ticks: int) -> None:
        elapsed = time.perf_counter() - self.started
        rate = 60 * done / elapsed if elapsed > 0 and done else 0.0
        width = 30
        bar = "#" * round(width * done / total) + "." * (width - round(width * done / total))
        text = f"[{bar}] {done}/{total} dialogs, {ticks} ticks, {rate:.0f} dialogs/min"
        if self.tty:
            sys.stderr.write(f"\r{text}" + ("\n" if done >= total else ""))
        elif done * 10 // total != self.last or done >= total:
            self.last = done * 10 // total
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def corpus_command(args: argparse.Namespace) -> int:
    """Carry out ``microturn corpus``; returns the exit status."""
    from microturn.scenarios import ScenarioError

    from .corpus import CorpusError, build_corpus, format_stats, stats

    try:
        if not args.stats:
            report = build_corpus(args.out, dialogs=args.dialogs, seed=args.seed, heldout=args.heldout,
                                  dialogs_per_shard=args.per_shard, workers=args.workers, progress=_Bar(),
                                  text_fraction=args.text_fraction,
                                  **({"phrasings": args.phrasings} if args.phrasings else {}),
                                  **({"late_reply": args.late_reply} if args.late_reply else {}),
                                  **({"slots": args.slots} if args.slots else {}))
            for note in report.shards_replaced:
                print(f"replaced a damaged shard: {note}", file=sys.stderr)
            print(f"wrote {report.shards_written} shards, kept {report.shards_skipped} finished ones: "
                  f"{report.dialogs} dialogs, {report.ticks} ticks in {report.seconds:.1f} s "
                  f"({report.dialogs_per_minute:.0f} dialogs/min, {report.ticks_per_minute:.0f} ticks/min)")
        print(format_stats(stats(args.out)))
    except (CorpusError, ScenarioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def train_command(args: argparse.Namespace) -> int:
    """Carry out ``microturn train``; returns the exit status."""
    torch = require("torch", "torch", "microturn train")
    from pathlib import Path

    from .corpus import CorpusError, load_corpus, read_manifest
    from .dataset import WindowDataset
    from .train import TrainConfig, TrainError, train

    def note(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    cfg = TrainConfig(config=args.config, steps=args.steps, batch=args.batch, lr=args.lr, warmup=args.warmup,
                      seed=args.seed, seq_len=args.seq_len, minutes=args.minutes, save_every=args.save_every,
                      eval_windows=args.eval_windows, session_ticks=args.session_ticks,
                      context_noise=args.context_noise, lag_headers=args.lag_headers)
    try:
        cfg.validate()
        if args.threads is not None:
            if args.threads < 1:
                raise TrainError(f"threads: expected a positive integer, got {args.threads}")
            torch.set_num_threads(args.threads)
        if args.heldout and Path(args.heldout).resolve() == Path(args.corpus).resolve():
            raise TrainError("--heldout must be another corpus than --corpus")
        t0 = time.perf_counter()
        manifest = read_manifest(args.corpus)
        slots = manifest.get("options", {}).get("slots", 0)
        if slots and slots != cfg.model_config().outputs_per_tick:
            note(f"warning: the corpus was heard through {slots} output slots a tick, the {args.config} model "
                 f"has {cfg.model_config().outputs_per_tick}: its world will not be the one in the data")
        data = WindowDataset(load_corpus(args.corpus), cfg.model_config(), cfg.window_len(), lag_headers=cfg.lag_headers)
        held = held_manifest = held_dialogs = None
        if args.heldout:
            held_manifest = read_manifest(args.heldout)
            held_dialogs = list(load_corpus(args.heldout))
            held = WindowDataset(held_dialogs, cfg.model_config(), cfg.window_len())
        note(f"loaded corpora in {time.perf_counter() - t0:.1f} s")
        extra = {"data": {"corpus": str(args.corpus), "seed": manifest["seed"], "split": manifest["split"],
                          "dialogs": manifest["dialogs"], "ticks": manifest["ticks"],
                          "generator": manifest["generator"], "options": manifest.get("options", {})}}
        if held_manifest is not None:
            extra["heldout"] = {"corpus": str(args.heldout), "seed": held_manifest["seed"],
                                "split": held_manifest["split"], "dialogs": held_manifest["dialogs"]}
        result = train(cfg, data, args.out, heldout=held, heldout_dialogs=held_dialogs,
                       resume=args.resume, manifest_extra=extra, log=note)
    except (CorpusError, TrainError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.noop:
        return 0
    first = result.losses[0][1] if result.losses else float("nan")
    last = result.losses[-1][1] if result.losses else float("nan")
    state = "finished" if result.finished else "paused (resume with --resume)"
    print(f"{state} at step {result.steps}: loss {first:.4f} -> {last:.4f}, {result.tokens:,} tokens in "
          f"{result.seconds / 60:.1f} min ({result.tokens / max(result.seconds, 1e-9):,.0f} tok/s); "
          f"wrote {result.checkpoint}")
    return 0
