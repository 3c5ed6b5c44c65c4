"""``microturn run``: run scenarios in lockstep virtual time.

    microturn run SCENARIO... [--model NAME] [--recognizer pocketsphinx] [--record FILE] [--report FILE.html] [--wav FILE] [--json FILE]
    microturn run --suite DIR [--model NAME] [--json FILE]

Prints, per scenario, a compact timeline, the metrics and the expectations; for a suite, one table per
category. ``--json FILE`` also writes one JSON object per scenario (JSON Lines, see
:mod:`microturn.scenarios.results`). Exit status: 0 when every expectation held, 1 when one failed (each
failure is named with what was observed), 2 for a scenario that cannot be loaded or run, 4 when none failed
but a judged expectation could not be judged (no judge configured, or no usable answer): not a pass. Progress
goes to stderr; stdout is a function of the scenarios alone, so the same run twice prints the same text.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["recognizer_flag", "register", "require_recognizer"]


def recognizer_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--recognizer {none,pocketsphinx}`` (shared by ``run``, ``demo`` and ``chat``)."""
    parser.add_argument("--recognizer", choices=["none", "pocketsphinx"], default="none",
                        help="pocketsphinx: recognise the user's speech, so audio without a transcript reaches "
                        "the dialog as words (the 'asr' extra); none (default)")


def require_recognizer(command: str, recognizer: str) -> None:
    """The recognizer needs the ``asr`` extra: say so (a :class:`~microturn.extras.MissingExtra`, exit 2) before
    anything is built."""
    if recognizer != "none":
        from microturn.extras import check

        check(f"microturn {command} --recognizer {recognizer}", {"pocketsphinx": "asr"},
              hint="or use --recognizer none")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``run`` command to a ``microturn`` argument parser's subparsers."""
    run = subparsers.add_parser(
        "run",
        help="run scenarios in lockstep virtual time; exit 1 if an expectation fails",
        description="Run scenario files in lockstep virtual time: print a timeline, the metrics and the "
        "expectations; exit 1 if an expectation fails, 2 if a scenario cannot be run.",
    )
    run.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario TOML files")
    run.add_argument("--suite", metavar="DIR", help="run every *.toml under DIR; one table per category")
    run.add_argument(
        "--model",
        metavar="NAME",
        help="the interaction backend: scripted, local:CHECKPOINT for a trained model, sglang (or sglang-text: "
        "through the text bridge) with --url for a model server (default: each scenario's)",
    )
    run.add_argument("--url", metavar="URL", help="the model server of --model sglang / sglang-text "
                     "(an sglang server with --enable-streaming-session, or `microturn serve`)")
    run.add_argument("--tools", action="append", default=[], metavar="MODULE_OR_FILE",
                     help="import a Python module or .py file and register every @tool it defines (repeatable; "
                     'needs scenarios with [world] tools = "builtin")')
    run.add_argument("--actor", action="append", default=[], metavar="MODULE:FACTORY",
                     help="add the actor this factory returns to every session (repeatable)")
    recognizer_flag(run)
    run.add_argument("--record", metavar="FILE", help="write the session's recording (one scenario)")
    run.add_argument("--report", metavar="FILE.html", help="write an HTML report (one scenario)")
    run.add_argument("--wav", metavar="FILE", help="write the session's audio as a stereo WAV (one scenario)")
    run.add_argument("--json", metavar="FILE", dest="json_file",
                     help="write one JSON object per scenario to FILE (JSON Lines): verdicts with their reasons, "
                     "the metrics and per-turn timing")
    run.set_defaults(fn=run_command)
    return run


class _Progress:
    """A progress bar on stderr (a redrawn line on a terminal, one line per scenario otherwise)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int, name: str) -> None:
        width = 24
        filled = round(width * done / total) if total else width
        bar = "#" * filled + "." * (width - filled)
        if self.tty:
            text = f"\r[{bar}] {done}/{total} {name}"[:100]
            self.stream.write(text.ljust(100) if done < total else f"\r{' ' * 100}\r")
        elif done < total:
            self.stream.write(f"[{bar}] {done + 1}/{total} {name}\n")
        self.stream.flush()


def run_command(args: argparse.Namespace) -> int:
    """Carry out ``microturn run``; returns the exit status."""
    from .runner import SuiteResult, format_result, format_suite, run_scenario, run_suite
    from .simulator import aggregate, format_aggregate, simulated_runs

    files = list(args.scenarios or [])
    recognizer = getattr(args, "recognizer", "none")
    require_recognizer("run", recognizer)
    url = getattr(args, "url", None)
    if url:
        if not args.model or args.model.partition(":")[0] not in ("sglang", "sglang-text") or ":" in args.model:
            print("error: --url goes with --model sglang or --model sglang-text", file=sys.stderr)
            return 2
        args.model = f"{args.model}:{url}"
    single_only = [flag for flag in ("record", "report", "wav") if getattr(args, flag, None)]
    if args.suite and files:
        print("error: give scenario files or --suite DIR, not both", file=sys.stderr)
        return 2
    if not args.suite and not files:
        print("error: give at least one scenario file, or --suite DIR", file=sys.stderr)
        return 2
    if single_only and (args.suite or len(files) > 1):
        print(f"error: --{single_only[0]} needs exactly one scenario", file=sys.stderr)
        return 2

    json_out = _open_json(args.json_file)
    if json_out is False:
        return 2
    summaries: list[dict[str, Any]] = []  # one per simulated-user file (a suite runs none)
    try:
        if args.suite:
            suite = run_suite(args.suite, model=args.model, progress=_Progress(), tools=args.tools, actors=args.actor,
                              recognizer=recognizer)
        else:
            results = []
            for i, file in enumerate(files):
                if i:
                    print()
                runs = simulated_runs(file)
                if runs is not None:  # a [user] table: one run per seed, each recorded to its own file
                    if args.report or args.wav:
                        print("error: --report and --wav take one session; a simulated user's runs take --record",
                              file=sys.stderr)
                        return 2
                    batch = _run_simulated(runs, args, run_scenario, format_result)
                    summaries.append(aggregate(runs[0].name.partition("[")[0], batch))
                    print(format_aggregate(summaries[-1]))
                    results += batch
                    continue
                result = run_scenario(file, model=args.model, record=args.record, report=args.report, wav=args.wav,
                                      tools=args.tools, actors=args.actor, recognizer=recognizer)
                print(format_result(result))
                results.append(result)
            if args.record and not summaries:
                print(f"recorded to {args.record}: replay it with `microturn replay {args.record}`")
            if args.report:
                print(f"wrote the report to {args.report}")
            if args.wav:
                print(f"wrote the session's audio to {args.wav} (user left, assistant right)")
            suite = SuiteResult("(command line)", results, [])
            if len(results) == 1:
                _write_json(json_out, suite, args.json_file, summaries)
                return _status(suite)
            print()
        print(format_suite(suite))
        failed = [(r.scenario.name, o) for r in suite.results for o in r.failures]
        if failed:
            print("\nfailed expectations:")
            for name, outcome in failed:
                print(f"  {name}: {outcome.name}: {outcome.observed}")
        unjudged = [(r.scenario.name, o) for r in suite.results for o in r.not_judged]
        if unjudged:
            print("\nnot judged (not a pass):")
            for name, outcome in unjudged:
                print(f"  {name}: {outcome.name}: {outcome.observed}")
        _write_json(json_out, suite, args.json_file, summaries)
        return _status(suite)
    finally:
        if json_out:
            json_out.close()


EXIT_NOT_JUDGED = 4
"""``microturn run`` exits with this when no expectation failed but a judged one could not be judged."""


def _status(suite: Any) -> int:
    if suite.errors:
        return 2
    verdicts = {r.verdict for r in suite.results}
    if "fail" in verdicts:
        return 1
    return EXIT_NOT_JUDGED if "not judged" in verdicts else 0


def _open_json(path: str | None) -> Any:
    """The --json file opened for writing before anything runs (a bad path is a usage error, not a lost run);
    None without --json, False (after an error message) when it cannot be opened."""
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")  # closed by run_command
    except OSError as exc:
        print(f"error: --json {path}: cannot write it: {exc.strerror}", file=sys.stderr)
        return False


def _write_json(out: Any, suite: Any, path: str | None, summaries: Any = ()) -> None:
    if not out:
        return
    from .results import dumps, error_record, result_record

    for result in suite.results:
        out.write(dumps(result_record(result)) + "\n")
    for file, error in suite.errors:
        out.write(dumps(error_record(file, error)) + "\n")
    for summary in summaries:  # after its runs' records: a simulated user's aggregate
        out.write(dumps(summary) + "\n")
    out.flush()
    print(f"wrote {len(suite.results) + len(suite.errors)} result(s) to {path}", file=sys.stderr)


def _run_simulated(runs: list[Any], args: argparse.Namespace, run_scenario: Any, format_result: Any) -> list[Any]:
    """Run a simulated user's runs in order, printing each; ``--record`` names one file per run."""
    from .simulator import record_path

    results = []
    for scenario in runs:
        seed = int(scenario.name.rpartition("=")[2].rstrip("]"))
        record = record_path(args.record, seed, len(runs)) if args.record else None
        result = run_scenario(scenario, model=args.model, record=record, tools=args.tools, actors=args.actor,
                              recognizer=getattr(args, "recognizer", "none"))
        print(format_result(result))
        if record:
            print(f"recorded to {record}")
        results.append(result)
    return results
