"""``microturn serve`` and ``microturn sglang-up``: a model server for the sglang backend, local or sglang's own.

    microturn serve [--host 127.0.0.1] [--port 30000] [--checkpoint PATH] [--max-body-bytes N]
                    [--max-sessions N] [--max-memory-bytes N] [--idle-timeout S] [--max-idle-timeout S]
    microturn sglang-up MODEL_PATH [--port 30000] [-- EXTRA SGLANG ARGS]

``serve`` runs the local torch model behind sglang's streaming-session protocol (:mod:`microturn.serve`);
``sglang-up`` starts sglang itself (``python -m sglang.launch_server --model-path … --enable-streaming-session``)
as a subprocess, waits for ``/health`` and stops it cleanly on exit or Ctrl-C. sglang needs a GPU and is not a
dependency of microturn (``pip install 'microturn[sglang]'`` on a GPU machine): without it, or without a GPU,
``sglang-up`` fails at once saying what is missing. This module imports neither torch nor sglang until a
command runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from microturn.extras import check

__all__ = ["SglangUnavailable", "check_sglang", "launch_and_wait", "register", "sglang_command"]


class SglangUnavailable(RuntimeError):
    """sglang cannot run here (not installed, no GPU); the message says what is missing."""


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``sglang-up`` to a ``microturn`` argument parser's subparsers."""
    from microturn.serve import DEFAULT_PORT, ServeLimits

    serve = subparsers.add_parser(
        "serve",
        help="serve the local interaction model over sglang's streaming-session HTTP protocol",
        description="Serve the local torch interaction model with the endpoints and rules of an sglang server "
        "started with --enable-streaming-session (/open_session, /generate, /close_session, /abort_request, "
        "/flush_cache, /health). The sglang backend (microturn run --model sglang --url URL, microturn chat "
        "--url URL) talks to it like to sglang.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks one)")
    serve.add_argument("--checkpoint", metavar="PATH", help="the model checkpoint (.pt with its .json manifest; "
                       "default: the shipped embedded checkpoint)")
    serve.add_argument("--untrained", metavar="PRESET", choices=["tiny", "embedded"],
                       help="serve an UNTRAINED model of this preset instead (tests and benchmarks: outputs are noise)")
    serve.add_argument("--workers", type=int, default=1, help="model steps run at once (threads; default 1)")
    serve.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    d = ServeLimits()
    serve.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                       help=f"largest request body accepted; larger ones get HTTP 413 (default {d.max_body_bytes})")
    serve.add_argument("--max-sessions", type=int, default=d.max_sessions,
                       help=f"open sessions at most; beyond, HTTP 503 with Retry-After (default {d.max_sessions})")
    serve.add_argument("--max-memory-bytes", type=int, default=d.max_memory_bytes,
                       help=f"cache bytes the open sessions may hold before new ones get HTTP 503 "
                       f"(default {d.max_memory_bytes})")
    serve.add_argument("--idle-timeout", type=float, default=d.idle_timeout,
                       help=f"seconds idle before a session opened without a timeout is freed (default "
                       f"{d.idle_timeout:g})")
    serve.add_argument("--max-idle-timeout", type=float, default=d.max_idle_timeout,
                       help=f"the longest idle timeout a client may ask; longer ones are clamped to it (default "
                       f"{d.max_idle_timeout:g})")
    serve.add_argument("--realtime", action="store_true",
                       help="serve a full microturn pipeline per connection over the OpenAI Realtime WebSocket "
                       "protocol at ws://HOST:PORT/v1/realtime instead (needs the realtime extra)")
    serve.add_argument("--model", default="embedded",
                       help="with --realtime: the pipeline's model backend (default embedded; scripted, local:PATH)")
    serve.set_defaults(fn=serve_command)

    up = subparsers.add_parser(
        "sglang-up",
        help="start an sglang server with streaming sessions (needs sglang and a GPU)",
        description="Start `python -m sglang.launch_server --model-path MODEL_PATH --enable-streaming-session` "
        "as a subprocess, wait until /health answers, and stop it cleanly on exit or Ctrl-C. Arguments after "
        "`--` go to sglang.",
    )
    up.add_argument("model_path", metavar="MODEL_PATH", help="a Hugging Face model id or a local model folder")
    up.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    up.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for /health (default 900)")
    up.add_argument("extra", nargs=argparse.REMAINDER, help="more sglang arguments, after --")
    up.set_defaults(fn=sglang_up_command)


def serve_command(args: argparse.Namespace) -> int:
    """Carry out ``microturn serve``: load the model, print the URL, serve until Ctrl-C. Raises
    :class:`~microturn.extras.MissingExtra` when the torch or serve extra is missing."""
    if getattr(args, "realtime", False):
        return realtime_command(args)
    check("microturn serve", {"torch": "torch", "starlette": "serve", "hypercorn": "serve"})
    from microturn.model.local import CheckpointError
    from microturn.serve import ServeLimits, serve

    def ready(url: str) -> None:
        print(f"microturn serve: listening on {url}", flush=True)

    try:
        limits = ServeLimits(max_body_bytes=args.max_body_bytes, max_sessions=args.max_sessions,
                             max_memory_bytes=args.max_memory_bytes, idle_timeout=args.idle_timeout,
                             max_idle_timeout=args.max_idle_timeout)
        serve(args.checkpoint, host=args.host, port=args.port, config=args.untrained or "embedded",
              untrained=args.untrained is not None, workers=args.workers, threads=args.threads, limits=limits,
              on_ready=ready)
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def realtime_command(args: argparse.Namespace) -> int:
    """Carry out ``microturn serve --realtime``: a pipeline per WebSocket connection until Ctrl-C. Raises
    :class:`~microturn.extras.MissingExtra` when the realtime or serve extra is missing."""
    check("microturn serve --realtime", {"openai": "realtime", "starlette": "serve", "hypercorn": "serve"})
    from microturn.assembly import BackendError, PipelineError, PipelineSpec
    from microturn.realtime.pipeline import pipeline_factory
    from microturn.realtime.server import RealtimeLimits, make_app, serve_realtime

    def ready(url: str) -> None:
        print(f"microturn serve --realtime: listening on {url}", flush=True)

    try:
        limits = RealtimeLimits(max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout)
        app = make_app(pipeline_factory(PipelineSpec(model=args.model, render_audio=True)), limits)
        serve_realtime(app, host=args.host, port=args.port, limits=limits, on_ready=ready)
    except (BackendError, PipelineError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def check_sglang(*, find_spec: Callable[[str], Any] = importlib.util.find_spec,
                 which: Callable[[str], str | None] = shutil.which,
                 cuda_available: Callable[[], bool] | None = None) -> None:
    """Raise :class:`SglangUnavailable` naming what is missing: the sglang package, or a GPU (no ``nvidia-smi``
    and torch sees no CUDA device)."""
    if find_spec("sglang") is None:
        raise SglangUnavailable(
            "sglang is not installed in this Python environment; install it on a GPU machine with "
            "pip install 'microturn[sglang]' (sglang>=0.5.10, ~200 packages), or serve the local model with "
            "`microturn serve`")
    if which("nvidia-smi") is None and not (cuda_available or _torch_cuda)():
        raise SglangUnavailable(
            "no GPU: nvidia-smi is not on PATH and torch sees no CUDA device; sglang's server needs an NVIDIA GPU "
            "(its CPU path targets Xeon with AMX and a source build). Serve the local model with `microturn serve`")


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def sglang_command(model_path: str, *, host: str = "127.0.0.1", port: int = 30000,
                   extra: Sequence[str] = ()) -> list[str]:
    """The command line that starts sglang with the flags streaming sessions need."""
    extra = [a for a in extra if a != "--"]
    return [sys.executable, "-m", "sglang.launch_server", "--model-path", model_path, "--host", host,
            "--port", str(port), "--enable-streaming-session", *extra]


def _stop(process: subprocess.Popen[Any], grace: float = 30.0) -> int:
    """SIGTERM the server's process group, then SIGKILL after ``grace`` seconds."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                process.kill()
            process.wait()
    return process.returncode


def launch_and_wait(command: Sequence[str], url: str, *, timeout: float = 900.0, poll: float = 1.0,
                    until: Callable[[], bool] | None = None,
                    on_ready: Callable[[str], None] | None = None) -> int:
    """Start ``command`` in its own process group, wait until ``url``/health answers 200 (or the process exits,
    or ``timeout`` passes: both are errors), call ``on_ready(url)``, then wait until the process exits or
    ``until()`` is true; the server is always stopped on the way out (Ctrl-C included). Returns its exit status
    (0 when stopped by us)."""
    import httpx

    process = subprocess.Popen(list(command), start_new_session=True)
    wait = threading.Event()
    try:
        end = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise SglangUnavailable(f"the server exited with status {process.returncode} before /health answered")
            try:
                if httpx.get(url + "/health", timeout=5.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise SglangUnavailable(f"{url}/health did not answer within {timeout:g} s")
            wait.wait(poll)
        if on_ready is not None:
            on_ready(url)
        while process.poll() is None and not (until is not None and until()):
            wait.wait(poll)
        return 0 if process.poll() is None else process.returncode
    finally:
        _stop(process)


def sglang_up_command(args: argparse.Namespace) -> int:
    """Carry out ``microturn sglang-up``."""
    try:
        check_sglang()
    except SglangUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    url = f"http://{args.host}:{args.port}"
    command = sglang_command(args.model_path, host=args.host, port=args.port, extra=args.extra or ())

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the server too, through the same clean path as Ctrl-C

    signal.signal(signal.SIGTERM, terminated)
    print(f"starting: {' '.join(command)}", flush=True)
    try:
        return launch_and_wait(command, url, timeout=args.timeout,
                               on_ready=lambda u: print(f"sglang is up at {u} (streaming sessions on); "
                                                        f"Ctrl-C stops it", flush=True))
    except SglangUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
