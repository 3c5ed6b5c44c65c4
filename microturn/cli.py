"""The ``microturn`` command line: ``demo``, ``chat``, ``replay``, ``show``, ``run``, ``serve``, ``sglang-up`` ...."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec
import trio

from microturn.extras import check
from microturn.messages import MESSAGE_TYPES, Message, describe
from microturn.runtime import (
    Actor,
    MicroturnError,
    Recording,
    ReplayResult,
    configure_logging,
    load_factory,
    open_session,
    read_recording,
    replay,
    run_lockstep,
)
from microturn.scenarios.cli import recognizer_flag, require_recognizer

if TYPE_CHECKING:
    from microturn.console import Screen
    from microturn.model.protocol import ModelBackend

__all__ = ["chat_actors", "main"]


def _timeline_line(message: Message) -> str:
    stamp = message.stamp
    assert stamp is not None
    return (
        f"{stamp.time:9.3f} {stamp.tick:6d} {stamp.seq:7d}  {stamp.source:<14} "
        f"{type(message).__name__:<16} {describe(message, limit=100)}"
    )


def _print_timeline(messages: Sequence[Message]) -> None:
    print(f"{'time(s)':>9} {'tick':>6} {'seq':>7}  {'source':<14} {'message':<16} fields")
    for message in messages:
        print(_timeline_line(message))


_MODEL_HELP = ("the interaction model: embedded (the shipped trained checkpoint, default; needs torch), "
               "scripted (the rule policy it imitates), local:CHECKPOINT, or sglang:URL / sglang-text:URL")

_DEMO_SHOWN = {
    "UserText", "Playout", "DialogState", "SpeechStarted", "SpeechEnded", "Heard", "Delegate", "ToolCall",
    "ToolResult", "BackgroundUpdate", "Interrupt", "SessionEnded",
}


def _cmd_demo(args: argparse.Namespace) -> int:
    from microturn import demo
    from microturn.assembly import FACTORY, build_pipeline
    from microturn.messages import Playout, UserText

    if args.pipeline == "live":
        _require_model_extra("demo", args.model)
        require_recognizer("demo", args.recognizer)
    elif args.recognizer != "none":
        print("error: --recognizer needs --pipeline live (the echo pipeline has no audio)", file=sys.stderr)
        return 2
    seen: list[Message] = []
    live = args.pipeline == "live"
    spec = demo.live_spec(model=args.model, wav_path=args.wav, tools=args.tools, actors=args.actor,
                          recognizer=args.recognizer)
    # before the session: a model or plugin that cannot be made is a usage error, not a session failure
    actors = build_pipeline(spec) if live else demo.build()

    async def main() -> None:
        async with open_session(
            actors,
            mode="lockstep",
            record=args.record,
            factory=FACTORY if live else "microturn.demo:build",
            params=msgspec.to_builtins(spec) if live else {},
            session_id="demo",
            taps=[seen.append],
        ) as session:
            for at, text in demo.LIVE_LINES if live else demo.DEMO_LINES:
                if live:
                    # with a recognizer the words come from it, not from a scheduled transcript
                    demo.speak_line(session, text, at, transcript=args.recognizer == "none")
                else:
                    session.schedule(UserText(text=text), at)
            await session.run_ticks(args.ticks)
        shown = [m for m in seen if type(m).__name__ in _DEMO_SHOWN and not (isinstance(m, Playout) and not m.text)]
        _print_timeline(shown)
        print(f"\n{session.stats()['messages']} messages over {args.ticks} ticks of virtual time (lockstep)")
        if args.record:
            print(f"recorded to {args.record}: replay it with `microturn replay {args.record}`")
        if args.wav:
            print(f"wrote the session's audio to {args.wav} (user left, assistant right)")

    run_lockstep(main)
    return 0


def chat_actors(screen: Screen, args: argparse.Namespace, backend: ModelBackend | None = None) -> list[Actor]:
    """The chat session's actors: the standard pipeline (model, built-in and ``--tools`` tools, the offline
    planner, ``--actor`` plugins, ``--recognizer``) with the console on ``screen``; ``backend`` is an already open
    model server."""
    from microturn.assembly import PipelineSpec, build_pipeline
    from microturn.console import ConsoleActor

    spec = PipelineSpec(model=args.model, tool_modules=list(args.tools), actors=list(args.actor),
                        recognizer=getattr(args, "recognizer", "none"))
    return build_pipeline(spec, backend=backend, extra=[ConsoleActor(screen)], tick_period=args.tick_ms / 1000)


def _require_model_extra(command: str, model: str) -> None:
    """The trained models need torch: say which extra before anything imports it."""
    if model.partition(":")[0] in ("embedded", "local"):
        check(f"microturn {command} --model {model}", {"torch": "torch"}, hint="or use --model scripted")


def _cmd_chat(args: argparse.Namespace) -> int:
    from microturn.console import run_chat

    tick = args.tick_ms / 1000
    require_recognizer("chat", args.recognizer)
    try:
        if not args.url:
            _require_model_extra("chat", args.model)
            # run_chat builds the actors before the session starts: a model or plugin that cannot be made is
            # a usage error (main prints it), not a session failure
            return trio.run(lambda: run_chat(lambda screen: chat_actors(screen, args), tick_period=tick))

        async def with_server() -> int:
            from microturn.model.sglang import open_sglang_backend

            mode = "text" if args.text_bridge else "native"
            async with open_sglang_backend(args.url, mode=mode, deadline=0.75 * tick) as backend:
                return await run_chat(lambda screen: chat_actors(screen, args, backend), tick_period=tick)

        return trio.run(with_server)
    except KeyboardInterrupt:  # Ctrl-C before the session runs (the model loading); in it, run_chat handles it
        print(file=sys.stderr)
        return 130


def _cmd_metrics(args: argparse.Namespace) -> int:
    from microturn.scenarios.metrics import metrics_main

    return metrics_main(args.file)


EXIT_DAMAGED = 3
"""``replay`` and ``show`` exit with this when the recording lost something (after printing what they could)."""


def _report_damage(rec: Recording | ReplayResult) -> None:
    for loss in rec.damage:
        print(f"warning: {loss}", file=sys.stderr)


def _cmd_replay(args: argparse.Namespace) -> int:
    # --factory is the user's own choice of code; a factory the file names is only looked up (resolve_factory)
    from microturn.assembly import allow_plugins

    factory = load_factory(args.factory) if args.factory else None
    rec = read_recording(args.file)
    with allow_plugins([*args.tools, *args.actor]):  # plugin code runs only when named here, never by the file
        result = run_lockstep(lambda: replay(rec, factory=factory))
    _report_damage(result)
    if not result.ok:
        print(f"replay FAILED after {result.compared} identical messages")
        print(result.divergence)
        if result.damage:
            print(f"note: the recording is damaged ({rec.lost_frames} frame(s), {rec.lost_bytes} bytes lost); "
                  f"a lost input makes everything after it diverge")
        return 1
    if not result.damage:
        print(f"replay OK: {result.compared} messages identical")
        return 0
    if rec.tail_cut_only:
        loss = result.damage[0]
        after = f" after seq {loss.after_seq}" if loss.after_seq is not None else ""
        print(f"replay of the intact prefix OK: {result.compared} messages identical; the tail was lost "
              f"({loss.lost_bytes} bytes from byte {loss.offset}{after})")
        if args.allow_truncated:
            return 0
        print(f"exit {EXIT_DAMAGED}: the recording is cut off (pass --allow-truncated to accept a cut-off tail)")
        return EXIT_DAMAGED
    lost = sum(d.lost_messages or 0 for d in result.damage)
    tail = " and its tail" if result.damage[-1].tail else ""
    print(f"replay INCOMPLETE: {result.compared} messages identical, but the recording is damaged: "
          f"{rec.lost_frames} frame(s) and {rec.lost_bytes} bytes lost in {len(result.damage)} place(s), "
          f"{lost} message(s){tail} not compared")
    return EXIT_DAMAGED


def _cmd_show(args: argparse.Namespace) -> int:
    rec = read_recording(args.file)
    unknown = [t for t in args.type or [] if t not in MESSAGE_TYPES]
    if unknown:
        print(f"error: unknown message type(s) {', '.join(unknown)}; known: {', '.join(sorted(MESSAGE_TYPES))}")
        return 2
    messages = [
        m
        for m in rec.messages
        if (not args.actor or (m.stamp is not None and m.stamp.source in args.actor))
        and (not args.type or type(m).__name__ in args.type)
    ]
    h = rec.header
    print(f"recording {rec.path}: session {h.session_id!r}, {h.mode}, tick {h.tick_period * 1000:.0f} ms, "
          f"actors {', '.join(h.actors)}, {len(rec.messages)} messages")
    shown = messages[: args.limit] if args.limit else messages
    _print_timeline(shown)
    if rec.damage:
        _report_damage(rec)
        lost = sum(d.lost_messages or 0 for d in rec.damage)
        tail = " and its tail" if rec.damage[-1].tail else ""
        print(f"error: the recording is damaged: {len(shown)} message(s) shown, {rec.lost_frames} frame(s) and "
              f"{rec.lost_bytes} bytes lost in {len(rec.damage)} place(s) ({lost} message(s){tail})",
              file=sys.stderr)
        return EXIT_DAMAGED
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _plugin_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tools", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="import a Python module or .py file and register every @tool it defines (repeatable)")
    parser.add_argument("--actor", action="append", default=[], metavar="MODULE:FACTORY",
                        help="add the actor this factory returns to the session (repeatable)")
    recognizer_flag(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``microturn`` command."""
    parser = argparse.ArgumentParser(
        prog="microturn",
        description="Real-time, full-duplex human-AI interaction in 200 ms micro-turns.",
    )
    parser.add_argument("--log-level", default="warning", help="debug, info, warning (default), error")
    parser.add_argument("--log-json", metavar="FILE", help="write structured logs as JSON lines to FILE")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run an example session end to end in lockstep and print its timeline")
    demo.add_argument("--ticks", type=_positive_int, default=120, help="micro-turns to run (default 120 = 24 s)")
    demo.add_argument(
        "--pipeline",
        choices=["live", "echo"],
        default="live",
        help="live: the real live loop (default); echo: light runtime-only actors",
    )
    demo.add_argument("--model", default="embedded", metavar="NAME", help=_MODEL_HELP)
    demo.add_argument("--wav", metavar="FILE", help="write the session's audio as a stereo WAV")
    demo.add_argument("--record", metavar="FILE", help="write the session's recording to FILE")
    _plugin_flags(demo)
    demo.set_defaults(fn=_cmd_demo)

    chat = sub.add_parser("chat", help="a live full-duplex text session in this terminal (realtime)")
    chat.add_argument("--tick-ms", type=_positive_float, default=200.0, help="micro-turn length in ms (default 200)")
    chat.add_argument("--model", default="embedded", metavar="NAME", help=_MODEL_HELP)
    chat.add_argument("--url", metavar="URL", help="talk to the model in this server (an sglang server with "
                      "--enable-streaming-session, or `microturn serve`) instead of --model")
    chat.add_argument("--text-bridge", action="store_true", help="with --url: a text-only model, through the text "
                      "bridge")
    _plugin_flags(chat)
    chat.set_defaults(fn=_cmd_chat)

    rep = sub.add_parser("replay", help="replay a recording and compare every message; exit 1 on divergence, "
                         f"{EXIT_DAMAGED} on a damaged or cut-off recording")
    rep.add_argument("file")
    rep.add_argument("--factory", metavar="MODULE:FUNCTION",
                     help="build the actors with this (imports it: a recording names only known factories)")
    rep.add_argument("--allow-truncated", action="store_true",
                     help="exit 0 when the only loss is a cut-off tail and the intact prefix replays identically")
    rep.add_argument("--tools", action="append", default=[], metavar="MODULE_OR_FILE",
                     help="allow the session's tool module to be imported again (a recording never imports one)")
    rep.add_argument("--actor", action="append", default=[], metavar="MODULE:FACTORY",
                     help="allow the session's actor plugin to be imported again")
    rep.set_defaults(fn=_cmd_replay)

    from microturn.scenarios.cli import register as register_run

    register_run(sub)

    from microturn.serve_cli import register as register_serve

    register_serve(sub)

    from microturn.training.cli import register as register_corpus

    register_corpus(sub)

    from microturn.web.cli import register as register_web

    register_web(sub)

    metrics = sub.add_parser("metrics", help="Full-Duplex-Bench metrics of a recording (live or scripted)")
    metrics.add_argument("file")
    metrics.set_defaults(fn=_cmd_metrics)

    show = sub.add_parser("show", help=f"print a recording as a readable timeline; exit {EXIT_DAMAGED} if it is damaged")
    show.add_argument("file")
    show.add_argument("--actor", action="append", metavar="NAME", help="only messages from this source")
    show.add_argument("--type", action="append", metavar="TYPE", help="only messages of this type")
    show.add_argument("--limit", type=_positive_int, default=None, help="print at most this many lines")
    show.set_defaults(fn=_cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``microturn`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, json_file=args.log_json)
    try:
        return args.fn(args)
    except MicroturnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C in any command: the shell's status for it, not a traceback
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
