"""One way to serve an ASGI app with hypercorn on trio, for every server the project runs (``serve``,
``serve --realtime``, ``web``): the same bind, quiet logs and graceful stop everywhere."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import trio

__all__ = ["open_hypercorn"]


@contextlib.asynccontextmanager
async def open_hypercorn(app: Any, host: str, port: int, *, read_timeout: float | None = None,
                         websocket_max_message_size: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` with hypercorn on trio while the block runs; yields the base ``http://`` URL (``port=0``
    picks a free port). Leaving the block shuts the server down gracefully (1 s for open connections)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    if read_timeout is not None:
        config.read_timeout = read_timeout
    if websocket_max_message_size is not None:
        config.websocket_max_message_size = websocket_max_message_size
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: hypercorn_serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
        )
        try:
            yield binds[0].rstrip("/")
        finally:
            stop.set()
