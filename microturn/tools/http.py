"""``http_get``: fetch a URL through httpx, only from allowed hosts, with a size cap and a timeout.

Refused before any connection is made: a scheme other than http/https, a host not on the allow-list. Every
redirect hop is checked against the allow-list too (an httpx request hook), so an allowed host cannot
redirect the tool somewhere else. Proxy settings in the environment (``HTTP_PROXY``...) are ignored: the
request goes to the allowed host itself, never through a third party the allow-list does not name.

The size cap counts the *decoded* body as it streams: the raw bytes are decompressed here (gzip and deflate
only, the encodings the tool asks for) a bounded piece at a time, so a gzip bomb stops at the cap, not at the
size of whatever one network chunk inflates to. A ``Content-Length`` over the cap is refused before reading.
The allow-list is empty by default — nothing can be fetched until a developer names hosts — and can come from
``MICROTURN_HTTP_ALLOW`` (comma-separated).

Entries: ``example.com`` (any port), ``example.com:8080`` (that port), ``*.example.com`` (subdomains),
``::1`` or ``[::1]`` (an IPv6 address, any port), ``[::1]:8080`` (that port). IP addresses match in any
spelling (``[0:0:0:0:0:0:0:1]`` is ``[::1]``).

The timeout bounds the whole call, body included (a server that trickles a byte at a time cannot stretch it):
as a trio deadline, and as a wall-clock deadline checked between reads, because under lockstep's virtual
clock trio deadlines jump while a socket is awaited (use http_get in realtime sessions; see docs/decisions.md).
The tool runner adds its own timeout in session time.
"""

from __future__ import annotations

import ipaddress
import math
import os
import time
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import msgspec
import trio

from .errors import ToolError, ToolRefused
from .registry import Tool, tool

__all__ = ["HTTP_ALLOW_ENV", "HttpPolicy", "make_http_get"]

HTTP_ALLOW_ENV = "MICROTURN_HTTP_ALLOW"
"""Environment variable with the default allow-list (comma-separated host entries)."""

_DECODE_STEP = 64 * 1024
"""The most decoded bytes produced from compressed input at one time."""


class HttpPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What ``http_get`` may fetch: allowed hosts, the largest body in bytes, the timeout in seconds."""

    allow: tuple[str, ...] = ()
    max_bytes: int = 256 * 1024
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise ValueError(f"HttpPolicy.max_bytes must be an int >= 1, got {self.max_bytes!r}")
        if not isinstance(self.timeout, (int, float)) or not 0 < self.timeout < math.inf:
            raise ValueError(f"HttpPolicy.timeout must be > 0 seconds and finite, got {self.timeout!r}")
        for entry in self.allow:
            _parse_entry(entry)  # a malformed entry fails here, naming itself, not at the first fetch

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
        host = _normal_host(url.host)
        port = url.port or (443 if url.scheme == "https" else 80)
        for entry in self.allow:
            name, want_port = _parse_entry(entry)
            if want_port is not None and want_port != port:
                continue
            if name == host or (name.startswith("*.") and host.endswith(name[1:])):
                return
        allowed = ", ".join(self.allow) if self.allow else "none (set MICROTURN_HTTP_ALLOW)"
        raise ToolRefused(f"host {host!r} (port {port}) is not on the http_get allow-list; allowed: {allowed}")


def _normal_host(host: str) -> str:
    """A host as entries and URLs are compared: lower case, IP addresses in their canonical spelling."""
    host = host.lower().strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _parse_entry(entry: str) -> tuple[str, int | None]:
    """An allow-list entry as (normalised host, port or None for any port); ValueError when malformed."""
    text = entry.strip()
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        inside, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            raise ValueError(f"http_get allow-list entry {entry!r}: expected [IPv6] or [IPv6]:port")
        host, port = inside, (int(rest[1:]) if rest else None)
    elif text.count(":") > 1:  # a bare IPv6 address: every colon is its own, there is no port
        host, port = text, None
    else:
        host, sep, tail = text.rpartition(":")
        if not sep:
            host, port = text, None
        elif tail.isdigit():
            port = int(tail)
        else:
            raise ValueError(f"http_get allow-list entry {entry!r}: the port {tail!r} is not a number")
    if not host or (port is not None and not 0 < port < 65536):
        raise ValueError(f"http_get allow-list entry {entry!r}: need a host and a port from 1 to 65535")
    return _normal_host(host), port


class _Decoder:
    """Content-Encoding decoding with a bound on what each step produces (so a bomb is caught at the cap)."""

    def __init__(self, encoding: str) -> None:
        names = [e.strip().lower() for e in encoding.split(",") if e.strip() and e.strip().lower() != "identity"]
        if len(names) > 1 or (names and names[0] not in ("gzip", "x-gzip", "deflate")):
            raise ToolError(f"the server sent an encoding http_get did not ask for: {encoding!r}")
        self.kind = names[0] if names else ""
        # gzip or zlib headers are detected (wbits | 32); raw deflate is the fall-back some servers send
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 32) if self.kind else None
        self._started = False

    def feed(self, data: bytes, room: int) -> bytes:
        """Decode ``data``; at most ``room`` + 1 bytes come out (one more than fits tells it is over)."""
        if self._z is None:
            return data[: room + 1]
        out = bytearray()
        pending = data
        while pending and len(out) <= room:
            try:
                out += self._z.decompress(pending, min(_DECODE_STEP, room + 1 - len(out)))
            except zlib.error as exc:
                if self.kind == "deflate" and not self._started:
                    self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._started = True
                    continue
                raise ToolError(f"the body is not valid {self.kind} data ({exc})") from None
            self._started = True
            pending = self._z.unconsumed_tail
        return bytes(out)


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
        late = ToolError(f"{url} did not answer within {policy.timeout:g} s")
        deadline = time.monotonic() + policy.timeout  # wall time, whatever clock trio runs on
        try:
            with trio.fail_after(policy.timeout):
                return await _fetch(url, parsed, deadline, late)
        except trio.TooSlowError:
            raise late from None
        except httpx.TimeoutException:
            raise late from None
        except httpx.TooManyRedirects:
            raise ToolError(f"{url} redirected more than 3 times") from None
        except httpx.HTTPError as exc:
            raise ToolError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from None

    async def _fetch(url: str, parsed: httpx.URL, deadline: float, late: ToolError) -> dict[str, Any]:
        async with httpx.AsyncClient(
            timeout=policy.timeout,
            follow_redirects=True,
            max_redirects=3,
            event_hooks={"request": [check_hop]},
            transport=transport,
            trust_env=False,  # HTTP_PROXY & co. would send the request (and its URL) to a host nobody allowed
            headers={"Accept-Encoding": "gzip, deflate"},  # only what _Decoder decodes with a bound
        ) as client, client.stream("GET", parsed) as response:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
                raise ToolRefused(f"{url} is {int(declared)} bytes; the size cap is {policy.max_bytes} bytes")
            decoder = _Decoder(response.headers.get("content-encoding", ""))
            body = bytearray()
            raw_seen = 0
            async for chunk in response.aiter_raw():
                if time.monotonic() > deadline:
                    raise late
                raw_seen += len(chunk)
                body += decoder.feed(chunk, policy.max_bytes - len(body))
                # the raw bound stops compressed input that decodes to nothing from streaming forever
                if len(body) > policy.max_bytes or raw_seen > 2 * policy.max_bytes + _DECODE_STEP:
                    raise ToolRefused(f"{url} is larger than the size cap of {policy.max_bytes} bytes")
            encoding = response.encoding or "utf-8"
            return {
                "status": response.status_code,
                "content_type": response.headers.get("content-type", ""),
                "text": bytes(body).decode(encoding, errors="replace"),
            }

    http_get.__name__ = name
    return tool(http_get, name=name, timeout=policy.timeout + 1.0)
