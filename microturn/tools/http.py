"""``http_get``: fetch a URL through httpx, only from allowed hosts, with a size cap and a timeout.

Refused before any connection is made: a scheme other than http/https, a host not on the allow-list. Every
redirect hop is checked against the allow-list too (an httpx request hook), so an allowed host cannot
redirect the tool somewhere else. The body is streamed and the call fails as soon as it passes the size cap
(a ``Content-Length`` over the cap is refused before reading). The allow-list is empty by default — nothing
can be fetched until a developer names hosts — and can come from ``MICROTURN_HTTP_ALLOW`` (comma-separated).

Entries: ``example.com`` (any port), ``example.com:8080`` (that port), ``*.example.com`` (subdomains).

The timeout is httpx's, which runs on trio's clock: use http_get in realtime sessions (under lockstep's
virtual clock, trio deadlines jump while a socket is awaited; see docs/decisions.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import msgspec

from .errors import ToolError, ToolRefused
from .registry import Tool, tool

__all__ = ["HttpPolicy", "make_http_get", "HTTP_ALLOW_ENV"]

HTTP_ALLOW_ENV = "MICROTURN_HTTP_ALLOW"
"""Environment variable with the default allow-list (comma-separated host entries)."""


class HttpPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What ``http_get`` may fetch: allowed hosts, the largest body in bytes, the timeout in seconds."""

    allow: tuple[str, ...] = ()
    max_bytes: int = 256 * 1024
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError(f"HttpPolicy.max_bytes must be >= 1, got {self.max_bytes!r}")
        if not self.timeout > 0:
            raise ValueError(f"HttpPolicy.timeout must be > 0 seconds, got {self.timeout!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> HttpPolicy:
        """The allow-list from ``MICROTURN_HTTP_ALLOW`` (empty when unset), other fields from ``overrides``."""
        raw = (os.environ if env is None else env).get(HTTP_ALLOW_ENV, "")
        allow = tuple(h.strip() for h in raw.split(",") if h.strip())
        return cls(allow=allow, **overrides)

    def check(self, url: httpx.URL) -> None:
        """Refuse a URL whose scheme or host is not allowed (raises :class:`ToolRefused`)."""
        if url.scheme not in ("http", "https"):
            raise ToolRefused(f"http_get only fetches http and https URLs, not {url.scheme!r} ({url})")
        host = url.host.lower()
        port = url.port or (443 if url.scheme == "https" else 80)
        for entry in self.allow:
            name, _, want_port = entry.lower().rpartition(":") if _has_port(entry) else (entry.lower(), "", "")
            if want_port and int(want_port) != port:
                continue
            if name == host or (name.startswith("*.") and host.endswith(name[1:])):
                return
        allowed = ", ".join(self.allow) if self.allow else "none (set MICROTURN_HTTP_ALLOW)"
        raise ToolRefused(f"host {host!r} (port {port}) is not on the http_get allow-list; allowed: {allowed}")


def _has_port(entry: str) -> bool:
    head, sep, tail = entry.rpartition(":")
    return bool(sep) and tail.isdigit() and not head.endswith(":")  # not an IPv6 literal's last group


def make_http_get(
    allow: Iterable[str] | HttpPolicy = (),
    *,
    max_bytes: int = 256 * 1024,
    timeout: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
    name: str = "http_get",
) -> Tool:
    """Build an ``http_get`` tool with its own allow-list, size cap (bytes) and timeout (seconds).

    The tool returns ``{"status", "content_type", "text"}``; HTTP errors (4xx/5xx) are results, not failures
    (the status says what happened); refusals, oversize bodies, timeouts and network errors fail the call."""
    if isinstance(allow, str):  # one host given bare, not a string to split into characters
        allow = (allow,)
    policy = allow if isinstance(allow, HttpPolicy) else HttpPolicy(
        allow=tuple(allow), max_bytes=max_bytes, timeout=timeout
    )

    async def check_hop(request: httpx.Request) -> None:
        policy.check(request.url)

    async def http_get(url: str) -> dict[str, Any]:
        """Fetch a web page or API response (GET) from an allowed host and return its status and text."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ToolRefused(f"not a valid URL: {url!r} ({exc})") from None
        policy.check(parsed)
        try:
            async with httpx.AsyncClient(
                timeout=policy.timeout,
                follow_redirects=True,
                max_redirects=3,
                event_hooks={"request": [check_hop]},
                transport=transport,
            ) as client, client.stream("GET", parsed) as response:
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
                    raise ToolRefused(
                        f"{url} is {int(declared)} bytes; the size cap is {policy.max_bytes} bytes"
                    )
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > policy.max_bytes:
                        raise ToolRefused(f"{url} is larger than the size cap of {policy.max_bytes} bytes")
                encoding = response.encoding or "utf-8"
                return {
                    "status": response.status_code,
                    "content_type": response.headers.get("content-type", ""),
                    "text": bytes(body).decode(encoding, errors="replace"),
                }
        except httpx.TimeoutException:
            raise ToolError(f"{url} did not answer within {policy.timeout:g} s") from None
        except httpx.TooManyRedirects:
            raise ToolError(f"{url} redirected more than 3 times") from None
        except httpx.HTTPError as exc:
            raise ToolError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from None

    http_get.__name__ = name
    return tool(http_get, name=name, timeout=policy.timeout + 1.0)
