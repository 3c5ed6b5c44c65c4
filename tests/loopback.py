"""A loopback HTTP server for tests: a small ASGI app served by hypercorn on trio on a free port (real sockets,
no hand-written HTTP). Shared by the test folders' conftests; it lives for the body of one ``async with``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

__all__ = ["serving"]


@asynccontextmanager
async def serving(app: Any, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve ``app`` on a free port of ``host`` (``::1`` for IPv6) for the body; yields the base URL."""
    config = Config()
    config.bind = [f"[{host}]:0" if ":" in host else f"{host}:0"]
    config.graceful_timeout = 0.2  # a handler that never finishes must not hold up the end of the test
    config.accesslog = None
    config.errorlog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config, shutdown_trigger=stop.wait))
        try:
            yield binds[0]
        finally:
            stop.set()
