"""A trio server run in a background thread with its own loop (real clock), for callers on another loop: lockstep
tests under a MockClock, or asyncio clients such as the openai SDK."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

__all__ = ["server_in_thread"]


@contextlib.contextmanager
def server_in_thread(open_server: Callable[[], AbstractAsyncContextManager[str]], *, name: str,
                     join_timeout: float = 30.0) -> Iterator[str]:
    """Enter ``open_server()`` (an async context manager yielding the server's URL) in a thread of its own while
    the block runs; yields that URL. A server that fails to start, or dies while the block runs, is raised here as
    a ``RuntimeError`` naming ``name``, instead of leaving the caller with a refused connection."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["token"] = trio.lowlevel.current_trio_token()
        state["stop"] = stop = trio.Event()
        async with open_server() as url:
            state["url"] = url
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            state["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ready.wait()
    if "error" in state:
        raise RuntimeError(f"{name} failed to start: {state['error']}") from state["error"]
    try:
        yield state["url"]
    finally:
        with contextlib.suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(state["stop"].set, trio_token=state["token"])
        thread.join(timeout=join_timeout)
    if "error" in state:
        raise RuntimeError(f"{name} stopped: {state['error']!r}") from state["error"]
