"""A scenario through a real sglang server's streaming sessions: per-tick latency and cached-token growth.

For anyone with a GPU: start sglang with streaming sessions (``microturn sglang-up MODEL_PATH``, or
``python -m sglang.launch_server --model-path MODEL_PATH --enable-streaming-session``), then

    python benchmarks/sglang_session.py --url http://127.0.0.1:30000 [--scenario smooth-turn-text] [--mode text]

runs the scenario (lockstep: each tick waits for its reply) through the sglang backend — by default through the
text bridge, so any instruct model works — and reports the per-tick round trip (p50/p99, and the server's own
share where it says) and how ``meta_info.cached_tokens`` grows tick by tick: with streaming sessions it must
equal the previous turn's prompt + completion every tick (``cached_equals_previous_total``), i.e. the server
reuses the session's KV cache and never re-prefills the history.

Without ``--url`` (``--quick``: the smoke test) it starts ``microturn serve`` (a subprocess) on a tiny untrained
model and runs against that. The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

try:
    import microturn  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import percentile, quiet_logging

from microturn.model.sglang import SglangBackend
from microturn.assembly import BACKENDS
from microturn.scenarios.runner import run_scenario

LIBRARY = Path(__file__).resolve().parents[1] / "microturn" / "scenarios" / "library"


@contextlib.contextmanager
def local_server() -> Iterator[str]:
    """``microturn serve`` on a tiny untrained model, as its own process (the smoke test's stand-in)."""
    import tempfile

    from serve import start_server

    from microturn.model.config import tiny
    from microturn.model.local import LocalBackend, save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(LocalBackend.random(tiny(), seed=0).model, Path(tmp) / "tiny.pt")
        proc, url = start_server(checkpoint)
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="the sglang server (started with --enable-streaming-session); default: a "
                        "local `microturn serve` on a tiny untrained model")
    parser.add_argument("--scenario", default="smooth-turn-text", help="a library scenario name or a TOML path")
    parser.add_argument("--mode", choices=["text", "native"], default="text",
                        help="text: the text bridge (any instruct model; default); native: microturn token layout")
    parser.add_argument("--quick", action="store_true", help="smoke run (against microturn serve unless --url)")
    args = parser.parse_args()
    quiet_logging()
    scenario = Path(args.scenario) if args.scenario.endswith(".toml") else LIBRARY / f"{args.scenario}.toml"
    backends: list[SglangBackend] = []

    def make(options: dict) -> SglangBackend:
        backend = SglangBackend(options.pop("url"), mode=args.mode, **options)
        backends.append(backend)
        return backend

    # the registry is open: this run's backend, to read its sessions' statistics
    BACKENDS.register("bench-sglang", make, argument="url")
    server = contextlib.nullcontext(args.url) if args.url else local_server()
    with server as url:
        result = run_scenario(scenario, model=f"bench-sglang:{url}")
    turns = [t for b in backends for s in b.sessions for t in s.turns]
    if not turns:
        raise SystemExit("no turn completed")
    latencies = [t.latency_s for t in turns]
    server_s = [t.server_s for t in turns if t.server_s is not None]
    consistent = all(b.cached_tokens == a.prompt_tokens + a.completion_tokens for a, b in pairwise(turns))
    growth = [(b.cached_tokens - a.cached_tokens) for a, b in pairwise(turns)]
    figures = {
        "url": url if args.url else "microturn-serve(untrained tiny)",
        "mode": args.mode,
        "scenario": result.scenario.name,
        "ticks": len(turns),
        "tick_latency_ms_p50": round(percentile(latencies, 50) * 1e3, 2),
        "tick_latency_ms_p99": round(percentile(latencies, 99) * 1e3, 2),
        "server_ms_p50": round(percentile(server_s, 50) * 1e3, 2) if server_s else None,
        "cached_tokens_first": turns[0].cached_tokens,
        "cached_tokens_last": turns[-1].cached_tokens,
        "cached_growth_per_tick": round(sum(growth) / len(growth), 2) if growth else 0.0,
        "prompt_tokens_last": turns[-1].prompt_tokens,
        "cached_equals_previous_total": consistent,
        "failed_turns": sum(s.failed for b in backends for s in b.sessions),
    }
    print(f"scenario {result.scenario.name} through {figures['url']} ({args.mode}): {len(turns)} ticks")
    print(f"  round trip per tick: p50 {figures['tick_latency_ms_p50']:.2f} ms, p99 {figures['tick_latency_ms_p99']:.2f} ms")
    print(f"  cached tokens: {figures['cached_tokens_first']} -> {figures['cached_tokens_last']} "
          f"(+{figures['cached_growth_per_tick']} per tick; equals the previous prompt+completion: {consistent})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
