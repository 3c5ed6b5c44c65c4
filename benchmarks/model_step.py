"""Per-tick step time of the local interaction model on the CPU, at short and long history, against re-prefill.

A step = append one tick's inputs (header + 4 dMel frames + any text) and decode its K outputs one at a time
through the exact (bit-reproducible) path. The model is UNTRAINED (random weights, seed 0): it never emits END
early, so every measured tick decodes all K tokens — the worst case, what p99 sees while speaking.

* at 10 s of history: 50 ticks stepped, then ``--ticks`` measured;
* at 10 min of history (3000 ticks): the history is fast-forwarded by appending ticks without decoding them (inputs plus K stand-in outputs) (packed up to
  the session's chunk bound), then ``--ticks`` measured. The embedded config has only sliding-window layers, so
  a step's cost must not depend on how long the session has run;
* the baseline re-runs the whole history through the same exact path every tick (no cache kept). Its cost is
  linear in the history (local layers: a fixed window per token), so it is timed at two shorter histories and
  extrapolated to 10 min (``reprefill_extrapolated`` says so).

    python benchmarks/model_step.py [--quick] [--ticks 60] [--config embedded] [--device cpu]

``--device cuda`` puts the model and its caches on the GPU (the kernels' Triton paths then run); the default is
the CPU, and the JSON line gains a ``device`` key only when it is not the CPU.

Runs torch on one thread (decode is thousands of tiny ops; a second OpenMP thread only adds waiting). Prints a
short table, then, as its last line, one JSON object with ``step_p99_ms`` (target ≤ 20), ``history_growth_ratio``
(p50 at 10 min / p50 at 10 s; target ≤ 1.3) and ``speedup_vs_reprefill`` at 10 min (target ≥ 20).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

try:
    import microturn  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from _common import tick_input

from microturn.model.config import PRESETS
from microturn.model.kv_session import KVSession
from microturn.model.layout import DMEL, PATCH, EncodedTick
from microturn.model.local import LocalBackend

TICK_S = 0.2
def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) * 1e3


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so host clocks time finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(session: KVSession, start: int, n: int, rng: np.random.Generator) -> list[float]:
    times = []
    for t in range(start, start + n):
        si = tick_input(t, rng)
        sync(session.device)
        t0 = time.perf_counter()
        session.step_tokens(si)
        sync(session.device)
        times.append(time.perf_counter() - t0)
    return times


def fast_forward(session: KVSession, start: int, ticks: int, rng: np.random.Generator) -> None:
    """Append ``ticks`` ticks (inputs plus K stand-in output bytes, not decoded), packed into chunks up to the ring's bound."""
    pending = EncodedTick([])
    limit = session.cfg.max_chunk_tokens
    for t in range(start, start + ticks):
        enc = session.encoder.encode(tick_input(t, rng))
        enc.tokens += [ord("a")] * session.cfg.outputs_per_tick  # stand-in outputs: a real tick's length
        if pending.tokens and len(pending.tokens) + len(enc.tokens) > limit:
            session.append(pending)
            pending = EncodedTick([])
        pending.extend(enc)
    if pending.tokens:
        session.append(pending)
    session.carry = None


def reprefill_seconds(model, history: EncodedTick, repeats: int) -> float:
    """Best of ``repeats`` full passes over ``history`` with a fresh cache (the no-cache baseline)."""
    best = float("inf")
    for _ in range(repeats):
        fresh = KVSession(model, ring=False, capacity=len(history.tokens))
        sync(fresh.device)
        t0 = time.perf_counter()
        fresh.append(history)
        sync(fresh.device)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: short histories, few ticks")
    parser.add_argument("--ticks", type=int, default=None, help="measured ticks per point (default 60; quick 8)")
    parser.add_argument("--config", default="embedded", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cpu", help="torch device for the model and caches (cpu, cuda, cuda:1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = PRESETS[args.config]()
    n = args.ticks or (8 if args.quick else 60)
    short_ticks = 50  # 10 s
    long_ticks = 300 if args.quick else 3000  # 60 s (quick) or 10 min
    model = LocalBackend.random(cfg, seed=0, device=args.device).model
    rng = np.random.default_rng(0)

    session = KVSession(model, trace=True)
    for t in range(short_ticks):
        session.step_tokens(tick_input(t, rng))
    short = measure(session, short_ticks, n, rng)
    # history as a token stream, for the baseline: the 10 s session's whole sequence
    history = EncodedTick([])
    for chunk, _ in session.trace or []:
        history.extend(chunk)
    session.trace = None
    fast_forward(session, short_ticks + n, long_ticks - short_ticks - n, rng)
    long = measure(session, long_ticks, n, rng)
    tokens_per_tick = len(history.tokens) / (short_ticks + n)
    long_tokens = session.length

    # Baseline: a full pass at two history lengths, extrapolated linearly to the long history.
    cut = len(history.tokens) // 2
    half = EncodedTick(history.tokens[:cut], history.dmel[: history.tokens[:cut].count(DMEL)],
                       history.patches[: history.tokens[:cut].count(PATCH)])
    repeats = 1 if args.quick else 2
    t_half, t_full = reprefill_seconds(model, half, repeats), reprefill_seconds(model, history, repeats)
    per_token = (t_full - t_half) / (len(history.tokens) - cut)
    reprefill_long = t_full + per_token * (long_tokens - len(history.tokens))

    p50_short, p99_short = pct(short, 50), pct(short, 99)
    p50_long, p99_long = pct(long, 50), pct(long, 99)
    figures = {
        "config": args.config,
        "quick": args.quick,
        "untrained_worst_case": True,
        "outputs_per_tick": cfg.outputs_per_tick,
        "step_p50_ms_short": round(p50_short, 2),
        "step_p99_ms_short": round(p99_short, 2),
        "step_p50_ms_long": round(p50_long, 2),
        "step_p99_ms_long": round(p99_long, 2),
        "step_p99_ms": round(max(p99_short, p99_long), 2),
        "history_short_s": short_ticks * TICK_S,
        "history_long_s": long_ticks * TICK_S,
        "history_long_tokens": long_tokens,
        "tokens_per_tick": round(tokens_per_tick, 1),
        "history_growth_ratio": round(p50_long / p50_short, 3),
        "reprefill_ms_long": round(reprefill_long * 1e3, 1),
        "reprefill_extrapolated": True,
        "speedup_vs_reprefill": round(reprefill_long * 1e3 / p50_long, 1),
        "memory_bytes": session.memory_bytes(),
        "threads": torch.get_num_threads(),
    }
    if torch.device(args.device).type != "cpu":
        figures["device"] = (
            torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else args.device
        )
    print(f"{'history':>10} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{short_ticks * TICK_S:>9.0f}s {p50_short:>8.2f} {p99_short:>8.2f}")
    print(f"{long_ticks * TICK_S:>9.0f}s {p50_long:>8.2f} {p99_long:>8.2f}")
    print(f"re-prefill at {long_ticks * TICK_S:.0f}s: {reprefill_long * 1e3:.0f} ms (extrapolated from "
          f"{cut} and {len(history.tokens)} tokens)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
