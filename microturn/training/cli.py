"""``microturn corpus``: generate the synthetic interaction corpus (or print the statistics of one)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

__all__ = ["corpus_command", "register"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``corpus`` command to a ``microturn`` argument parser's subparsers."""
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
    corpus.add_argument("--per-shard", type=int, default=8, metavar="N", help="dialogs per shard (default 8)")
    corpus.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    corpus.add_argument("--text-fraction", type=float, default=0.25, metavar="F",
                        help="fraction of dialogs in text mode instead of espeak-ng speech (default 0.25)")
    corpus.add_argument("--stats", action="store_true", help="only print the statistics of the corpus in --out")
    corpus.set_defaults(fn=corpus_command)
    return corpus


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
                                  text_fraction=args.text_fraction)
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
