"""Closed-loop quality of the trained interaction model on held-out randomized dialogs, beside the oracle.

Both the scripted oracle and the checkpoint run the same held-out dialogs (seeds disjoint from every training
corpus) in lockstep with themselves in the loop; :mod:`microturn.training.quality` pools the scenario metrics
per event and counts per-tick agreement of the control decisions with a shadow oracle fed the same inputs.

    python benchmarks/model_quality.py [--checkpoint PATH] [--dialogs 60] [--facts-dialogs 500] [--seed 3] [--quick]

A second pass over ``--facts-dialogs`` other held-out dialogs (corpus seed ``seed + 1``, the fact-carrying
categories: time, arithmetic, questions, reminders) counts what was said against what was given:
``content_exact`` (the share of tool/background results spoken verbatim, target ≥ 0.99) and ``invented_facts``
(numbers and delegated goals no input held, target 0); these two rows of the table come from that pass.

Prints the Markdown table (oracle, model, target) and, as its last line, one JSON object with the model's
``response_latency_s`` (target ≤ 0.40), ``stop_latency_s`` (≤ 0.20), ``takeover_pause`` (≤ 0.10),
``control_agreement`` (≥ 0.95), ``content_exact`` and ``invented_facts``, plus the oracle's figures under ``oracle``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import microturn  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import emit, quiet_logging

from microturn.model.weights import EMBEDDED_CHECKPOINT
from microturn.training.quality import format_quality, measure_quality


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(EMBEDDED_CHECKPOINT), help="the checkpoint (default: shipped)")
    parser.add_argument("--dialogs", type=int, default=60, help="held-out dialogs per model (default 60)")
    parser.add_argument("--seed", type=int, default=3, help="held-out corpus seed (default 3)")
    parser.add_argument("--facts-dialogs", type=int, default=500,
                        help="held-out dialogs per model for content_exact / invented_facts (default 500)")
    parser.add_argument("--quick", action="store_true", help="3 dialogs per pass (a smoke run)")
    args = parser.parse_args()
    quiet_logging()
    dialogs = 3 if args.quick else args.dialogs
    facts = 3 if args.quick else args.facts_dialogs
    if not 1 <= dialogs <= 100_000 or not 1 <= facts <= 100_000:
        parser.error(f"--dialogs / --facts-dialogs: expected 1..100000, got {dialogs} / {facts}")

    def bar(label: str):
        def show(done: int, total: int) -> None:
            print(f"\r{label}: {done}/{total} dialogs", end="" if done < total else "\n", file=sys.stderr, flush=True)
        return show

    t0 = time.perf_counter()
    oracle = measure_quality("scripted", seed=args.seed, dialogs=dialogs, progress=bar("oracle"))
    t1 = time.perf_counter()
    model = measure_quality(f"local:{args.checkpoint}", seed=args.seed, dialogs=dialogs, progress=bar("model"))
    t2 = time.perf_counter()
    fact_kinds = {"categories": ["time", "arithmetic", "question", "reminder"]}
    for label, name, result in (("oracle facts", "scripted", oracle), ("model facts", f"local:{args.checkpoint}", model)):
        counted = measure_quality(name, seed=args.seed + 1, dialogs=facts, progress=bar(label), **fact_kinds)
        result.content_exact, result.invented_facts, result.results = (
            counted.content_exact, counted.invented_facts, counted.results)
        result.extra = counted.extra
    t3 = time.perf_counter()
    oracle.model, model.model = "oracle (scripted)", f"model ({Path(args.checkpoint).name})"
    print(format_quality([oracle, model]))
    print(f"\ncontent rows over {facts} more held-out dialogs (seed {args.seed + 1}); "
          f"wall: oracle {t1 - t0:.1f} s, model {t2 - t1:.1f} s, facts {t3 - t2:.1f} s; held-out seed {args.seed}")
    emit({**model.figures(), "oracle": oracle.figures(), "seed": args.seed, "facts_dialogs": facts,
          "checkpoint": args.checkpoint})


if __name__ == "__main__":
    main()
