"""Two revisions of the project side by side: the lockstep and scenario-suite benchmarks, old versus new.

Each revision is checked out into a temporary ``git worktree`` (removed afterwards; ``WORKTREE`` as the new
revision, the default, means the files as they are in this checkout, uncommitted changes included). Then each
benchmark runs from each tree in turn, alternating (old, new, then new, old: A/B/B/A/A/B... for ``--rounds``
rounds, so that neither side always runs first), as a fresh process with ``PYTHONPATH``
pointing at that tree, so both revisions see the same machine load and the same interpreter and packages.
Per benchmark the main figure is ``wall_seconds`` (lower is better); the ratio reported is the median over
rounds of the paired ratio new / old (so > 1 means the new revision is slower), next to each side's median;
``ratio_best`` compares each side's best round, which is what the benchmarks themselves report (best of their
repeats) and what a loaded machine disturbs least; ``cpu_ratio`` is the same paired median of the CPU seconds
each benchmark process used in all (imports and warm-up included), which preemption by other processes does
not inflate.

    python benchmarks/compare_revs.py [OLD] [NEW] [--rounds 3] [--quick] [--bench lockstep.py --bench suite.py]

``OLD`` defaults to ``HEAD``; the issue's check is ``python benchmarks/compare_revs.py 77545e0``: neither
benchmark may be more than 10% slower (``max_ratio <= 1.1``). Prints a table, then, as its last line, one JSON
object: {"benchmarks": {"lockstep.py": {"old_s": ..., "new_s": ..., "ratio": ..., "ratio_best": ...}, ...}, "max_ratio": ...,
"within_limit": ..., ...}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_name, emit, load_average

REPO = Path(__file__).resolve().parents[1]
WORKTREE = "WORKTREE"
BENCHMARKS = ("lockstep.py", "suite.py")
FIGURE = "wall_seconds"
LIMIT = 1.10
MAX_ROUNDS = 50
RUN_TIMEOUT_S = 1800


class CompareError(RuntimeError):
    """A revision that cannot be checked out, or a benchmark that did not produce its figure."""


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), *args], check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise CompareError(f"git {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def resolve(rev: str) -> str:
    """The commit ``rev`` names, or ``WORKTREE`` itself."""
    if rev == WORKTREE:
        return rev
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except CompareError:
        raise CompareError(f"revision {rev!r} is not a commit of {REPO}") from None


@contextmanager
def checkout(rev: str, parent: Path) -> Iterator[Path]:
    """A tree with ``rev`` checked out (a detached temporary worktree), removed on exit; ``WORKTREE`` is this
    checkout itself."""
    if rev == WORKTREE:
        yield REPO
        return
    path = Path(tempfile.mkdtemp(prefix=f"rev-{rev[:10]}-", dir=parent))
    path.rmdir()  # git worktree add wants to create it
    _git("worktree", "add", "--detach", "--quiet", str(path), rev)
    try:
        yield path
    finally:
        try:
            _git("worktree", "remove", "--force", str(path))
        except CompareError:
            shutil.rmtree(path, ignore_errors=True)
            _git("worktree", "prune")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_benchmark(tree: Path, script: str, flags: list[str], python: str) -> tuple[float, float]:
    """Run ``tree/benchmarks/script`` with that tree first on the path; its ``wall_seconds`` and the CPU
    seconds the whole process used (imports and warm-up included)."""
    path = tree / "benchmarks" / script
    if not path.exists():
        raise CompareError(f"{path} does not exist in that revision")
    env = dict(os.environ, PYTHONPATH=str(tree))
    cpu = _children_cpu()
    try:
        out = subprocess.run(
            [python, str(path), *flags], check=False, capture_output=True, text=True, cwd=tree, env=env,
            timeout=RUN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise CompareError(f"{path} ran past {RUN_TIMEOUT_S} s") from None
    cpu = _children_cpu() - cpu
    if out.returncode != 0:
        raise CompareError(f"{path} exited {out.returncode}: {out.stderr.strip()[-1500:]}")
    lines = out.stdout.strip().splitlines()
    try:
        figures = json.loads(lines[-1])
        value = float(figures[FIGURE])
    except (IndexError, ValueError, KeyError, TypeError):
        raise CompareError(f"{path} did not end with a JSON line naming {FIGURE!r}: {lines[-1:]}") from None
    if not value > 0:
        raise CompareError(f"{path} reported {FIGURE}={value!r}, not a positive time")
    return value, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", nargs="?", default="HEAD", help="the base revision (default HEAD)")
    parser.add_argument(
        "new", nargs="?", default=WORKTREE, help=f"the revision to judge (default {WORKTREE}: this checkout's files)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per benchmark (default 3)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument(
        "--bench", action="append", choices=BENCHMARKS, default=None, help="a benchmark to run (default: all)"
    )
    parser.add_argument("--python", default=sys.executable, help="the interpreter (default: this one)")
    args = parser.parse_args()
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be 1..{MAX_ROUNDS}, got {args.rounds}")
    benches = args.bench or list(BENCHMARKS)
    flags = ["--quick"] if args.quick else []

    try:
        old, new = resolve(args.old), resolve(args.new)
        times: dict[str, dict[str, list[float]]] = {b: {"old": [], "new": []} for b in benches}
        cpus: dict[str, dict[str, list[float]]] = {b: {"old": [], "new": []} for b in benches}
        with tempfile.TemporaryDirectory(prefix="compare-revs-") as tmp, ExitStack() as stack:
            trees = {"old": stack.enter_context(checkout(old, Path(tmp)))}
            trees["new"] = stack.enter_context(checkout(new, Path(tmp)))
            for bench in benches:
                for r in range(args.rounds):
                    # old, new, then new, old: alternating, and neither side always runs right after the other
                    for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
                        seconds, cpu = run_benchmark(trees[side], bench, flags, args.python)
                        times[bench][side].append(seconds)
                        cpus[bench][side].append(cpu)
                        print(f"{bench:<14}{side:<5}{seconds:>10.4f} s  (process cpu {cpu:.2f} s)", file=sys.stderr,
                              flush=True)
    except CompareError as exc:
        print(f"compare_revs: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    results = {}
    print(f"{args.old} ({old[:10]}) -> {args.new} ({new[:10]}): {args.rounds} A/B rounds, {cpu_name()}")
    print(f"{'benchmark':<14}{'old s':>10}{'new s':>10}{'new/old':>9}{'min..max':>13}{'best/best':>11}{'cpu':>8}")
    for bench in benches:
        olds, news = times[bench]["old"], times[bench]["new"]
        paired = [n / o for n, o in zip(news, olds, strict=True)]
        ratio = statistics.median(paired)
        cpu_paired = [n / o for n, o in zip(cpus[bench]["new"], cpus[bench]["old"], strict=True) if o > 0]
        results[bench] = {
            "old_s": round(statistics.median(olds), 4),
            "new_s": round(statistics.median(news), 4),
            "ratio": round(ratio, 3),
            "ratio_best": round(min(news) / min(olds), 3),
            "cpu_ratio": round(statistics.median(cpu_paired), 3) if cpu_paired else None,
            "ratio_min": round(min(paired), 3),
            "ratio_max": round(max(paired), 3),
        }
        print(f"{bench:<14}{results[bench]['old_s']:>10.4f}{results[bench]['new_s']:>10.4f}{ratio:>9.3f}"
              f"{f'{min(paired):.2f}..{max(paired):.2f}':>13}{results[bench]['ratio_best']:>11.3f}"
              f"{results[bench]['cpu_ratio'] or math.nan:>8.3f}")
    max_ratio = max(r["ratio"] for r in results.values())
    emit(
        {
            "benchmarks": results,
            "max_ratio": max_ratio,
            "limit": LIMIT,
            "within_limit": max_ratio <= LIMIT,
            "figure": FIGURE,
            "old": old,
            "new": new,
            "rounds": args.rounds,
            "quick": args.quick,
            "load_average": load_average(),
            "cpu": cpu_name(),
        }
    )


if __name__ == "__main__":
    main()
