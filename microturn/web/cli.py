"""``microturn web``: the command's flags and entry point (the CLI layer may print)."""

from __future__ import annotations

import argparse
from typing import Any

from microturn.extras import check

__all__ = ["register"]


def _cmd_web(args: argparse.Namespace) -> int:
    check("microturn web", {"starlette": "serve", "hypercorn": "serve"})
    from microturn.assembly import PipelineSpec
    from microturn.web.app import WebLimits, WebServer, web_main

    spec = PipelineSpec(model=args.model, tool_modules=list(args.tools), render_audio=True)
    server = WebServer(spec, record=args.record, limits=WebLimits(max_sessions=args.max_sessions))
    web_main(server, args.host, args.port, lambda url: print(f"microturn web: open {url}/ in a browser", flush=True))
    return 0


def register(subparsers: Any) -> None:
    """Add ``web`` to the ``microturn`` command."""
    web = subparsers.add_parser("web", help="a voice/text session in the browser, one session per tab")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--model", default="scripted", help="model backend (scripted, embedded, local:PATH, sglang:URL)")
    web.add_argument("--tools", action="append", default=[], metavar="MODULE", help="a module of @tool functions")
    web.add_argument("--record", metavar="DIR", help="write one recording per session into DIR")
    web.add_argument("--max-sessions", type=int, default=32, metavar="N")
    web.set_defaults(fn=_cmd_web)
