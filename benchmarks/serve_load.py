"""``microturn serve`` under load while a fault injector hangs up on streams mid-way.

N sessions at once (default 50) each stream S turns (default 20) through one ``microturn serve`` process (an
UNTRAINED model: its outputs are noise, but deterministic). A seeded fault injector picks 40 % of the
sessions as victims and, in each, cuts a quarter of its streams after the first event (10 % of all streams):
the client closes the connection mid-stream. The other sessions survive untouched; their outputs are
compared, turn by turn, with the same model stepped in this process (one KVSession per session, alone).

Figures (the JSON last line): ``server_exits`` (must be 0), ``crossed_or_lost_turns`` (surviving turns whose
output ids, prompt or cached counts differ from the in-process reference: must be 0), ``streams_cut``,
``request_ms_p50`` / ``request_ms_p99`` (one streamed turn, client side, the uncut ones), and the server's
RSS ``rss_mb_before`` (warm, no session), ``rss_mb_peak`` (all sessions open) and ``rss_mb_after`` (all
closed again), with ``internal_errors`` from its /health.

    python benchmarks/serve_load.py [--quick] [--sessions 50] [--steps 20] [--config tiny] [--seed 0]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

try:
    import microturn  # noqa: F401
except ImportError:  # running from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np
import trio
from _common import emit, percentile, quiet_logging, tick_input

from microturn.model.config import PRESETS
from microturn.model.kv_session import KVSession
from microturn.model.layout import TickEncoder
from microturn.model.local import LocalBackend

ROOT = Path(__file__).resolve().parents[1]


def start_server(config: str, sessions: int) -> tuple[subprocess.Popen[str], str]:
    """``microturn serve --untrained CONFIG`` on a free port, as its own process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "microturn.cli", "serve", "--port", "0", "--untrained", config,
                             "--threads", "1", "--max-sessions", str(max(256, 2 * sessions))],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"microturn serve did not start: {line!r}")
    return proc, line.split()[-1]


def rss_mb(pid: int) -> float:
    """A process's resident memory (MiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def body(sid: str, enc, k: int) -> dict:
    """A streamed /generate of one encoded tick."""
    out: dict = {"input_ids": enc.tokens, "stream": True, "session_params": {"id": sid},
                 "sampling_params": {"max_new_tokens": k, "temperature": 0}}
    if enc.dmel or enc.patches:
        out["media"] = {"dmel": base64.b64encode(b"".join(enc.dmel)).decode(),
                        "patches": base64.b64encode(b"".join(enc.patches)).decode()}
    return out


async def streamed_turn(client: httpx.AsyncClient, payload: dict, cut: bool) -> dict | None:
    """One streamed turn: its final answer, or None when the injector cut it after the first event (or the
    server refused it while the previous, cut, turn was still being aborted)."""
    async with client.stream("POST", "/generate", json=payload) as r:
        if r.status_code != 200:
            await r.aread()
            return {"refused": r.status_code, "text": r.text}
        last = None
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if cut:
                return None  # leaving the block closes the connection mid-stream
            if line == "data: [DONE]":
                break
            last = json.loads(line[6:])
        return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 sessions x 6 steps (the smoke test)")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--config", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.steps = 10, 6
    quiet_logging()
    n, steps = args.sessions, args.steps
    model = LocalBackend.random(PRESETS[args.config](), seed=0).model  # the weights serve --untrained loads
    cfg = model.cfg
    k = cfg.outputs_per_tick
    chunks = {}
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        enc = TickEncoder(cfg.max_input_tokens)
        chunks[i] = [enc.encode(tick_input(t, rng)) for t in range(steps)]
    faults = random.Random(args.seed)
    victims = set(faults.sample(range(n), max(1, round(0.4 * n))))
    cuts = {i: set(faults.sample(range(1, steps), max(1, steps // 4))) for i in victims}

    # The reference: every surviving session alone, in process.
    reference: dict[int, list[tuple[list[int], int, int]]] = {}
    for i in range(n):
        if i in victims:
            continue
        kv = KVSession(model)
        rows, total = [], 0
        for enc in chunks[i]:
            ids = kv.step_encoded(enc, k)
            cached = total
            rows.append((ids, cached + len(enc.tokens), cached))
            total = cached + len(enc.tokens) + len(ids)
        reference[i] = rows

    proc, url = start_server(args.config, n)
    got: dict[int, list] = {}
    times: list[float] = []
    cut_count = 0
    try:
        async def run() -> tuple[float, float, dict]:
            nonlocal cut_count
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=2 * n)
            async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
                warm = (await client.post("/open_session", json={"streaming": True})).json()
                await streamed_turn(client, body(warm, chunks[0][0], k), False)
                await client.post("/close_session", json={"session_id": warm})
                before = rss_mb(proc.pid)
                sids = {}
                for i in range(n):
                    sids[i] = (await client.post("/open_session", json={"streaming": True})).json()
                peak = [0.0]
                barrier = {"left": n, "event": trio.Event()}

                async def session(i: int) -> None:
                    nonlocal cut_count
                    rows = []
                    for t, enc in enumerate(chunks[i]):
                        cut = t in cuts.get(i, ())
                        for _ in range(1000):  # a cut turn may still be aborting: the next one waits for it
                            t0 = time.perf_counter()
                            answer = await streamed_turn(client, body(sids[i], enc, k), cut)
                            if answer is None or "refused" not in answer or answer["refused"] != 400:
                                break
                            await trio.sleep(0.002)
                        if answer is None:
                            cut_count += 1
                            continue
                        times.append(time.perf_counter() - t0)
                        meta = answer.get("meta_info", {})
                        rows.append((answer.get("output_ids"), meta.get("prompt_tokens"), meta.get("cached_tokens")))
                    got[i] = rows
                    barrier["left"] -= 1
                    if barrier["left"] == 0:
                        barrier["event"].set()

                async with trio.open_nursery() as nursery:
                    for i in range(n):
                        nursery.start_soon(session, i)
                    await barrier["event"].wait()
                    peak[0] = rss_mb(proc.pid)
                health = (await client.get("/health")).json()
                for sid in sids.values():
                    await client.post("/close_session", json={"session_id": sid})
                after = rss_mb(proc.pid)
            return before, peak[0], {"after": after, "health": health}

        before, peak, rest = trio.run(run)
    finally:
        exits = 0 if proc.poll() is None else 1
        proc.terminate()
        proc.wait(60)
    crossed = sum(a != b for i in reference for a, b in zip(got.get(i, []), reference[i], strict=False))
    lost = sum(abs(len(got.get(i, [])) - len(reference[i])) for i in reference)
    print(f"{n} sessions x {steps} streamed turns ({args.config}); {cut_count} streams cut in {len(victims)} "
          f"victim sessions; {len(reference)} surviving sessions checked against in-process steps")
    print(f"  server exits {exits}, crossed or lost turns {crossed + lost}, internal errors "
          f"{rest['health'].get('internal_errors')}")
    print(f"  turn p50 {percentile(times, 50) * 1000:.1f} ms, p99 {percentile(times, 99) * 1000:.1f} ms")
    print(f"  server RSS {before:.0f} MiB warm -> {peak:.0f} MiB loaded -> {rest['after']:.0f} MiB all closed")
    emit({
        "server_exits": exits,
        "crossed_or_lost_turns": crossed + lost,
        "streams_cut": cut_count,
        "streams_total": n * steps,
        "sessions_checked": len(reference),
        "request_ms_p50": percentile(times, 50) * 1000,
        "request_ms_p99": percentile(times, 99) * 1000,
        "rss_mb_before": before,
        "rss_mb_peak": peak,
        "rss_mb_after": rest["after"],
        "internal_errors": rest["health"].get("internal_errors"),
    })


if __name__ == "__main__":
    main()
