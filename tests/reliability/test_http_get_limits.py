"""``http_get`` against hostile servers on real loopback sockets (trio's real clock): a body trickled under
the per-read timeout, a gzip bomb, proxy variables in the environment, an IPv6 ``[::1]`` allow-list entry."""

from __future__ import annotations

import socket
import time
import tracemalloc
import zlib

import anyio
import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from microturn.tools import HttpPolicy, ToolContext, ToolError, ToolRefused, make_http_get


async def fetch(tool, url: str):
    with trio.fail_after(20):  # a guard for a broken build only; every limit under test is far shorter
        return await tool.invoke({"url": url}, ToolContext.standalone())


def host_port(url: str) -> str:
    return f"127.0.0.1:{httpx.URL(url).port}"


# --- a body that trickles in -----------------------------------------------------------------------------------


async def _trickle(request: Request) -> Response:
    async def body():
        while True:  # forever, a byte at a time, each well inside the per-read timeout
            yield b"."
            await anyio.sleep(0.05)

    return StreamingResponse(body(), media_type="text/plain")


async def test_the_timeout_bounds_the_whole_body_not_each_read(serve) -> None:
    async with serve(Starlette(routes=[Route("/trickle", _trickle)])) as url:
        tool = make_http_get([host_port(url)], timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ToolError, match=r"did not answer within 0\.5 s"):
            await fetch(tool, f"{url}/trickle")
        # the body never ends: only the overall deadline can have stopped it (the bound is loose on purpose)
        assert time.monotonic() - started < 10


# --- a gzip bomb -----------------------------------------------------------------------------------------------

BOMB_BYTES = 64 * 1024 * 1024


def _bomb(encoding: str) -> bytes:
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[encoding]
    z = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(1024 * 1024)
    return b"".join(z.compress(zeros) for _ in range(BOMB_BYTES // len(zeros))) + z.flush()


BOMBS = {name: _bomb(name) for name in ("gzip", "deflate", "raw-deflate")}


def _bomb_route(request: Request) -> Response:
    name = request.path_params["name"]
    headers = {"content-encoding": "deflate" if name == "raw-deflate" else name}
    return Response(BOMBS[name], media_type="text/plain", headers=headers)


def _small_gzip(request: Request) -> Response:
    return Response(zlib.compress(b"hello, compressed" * 3, wbits=31), headers={"content-encoding": "gzip"})


def _brotli(request: Request) -> Response:
    return Response(b"\x00\x01", headers={"content-encoding": "br"})


COMPRESSED = Starlette(
    routes=[Route("/bomb/{name}", _bomb_route), Route("/small", _small_gzip), Route("/br", _brotli)]
)


@pytest.mark.parametrize("name", sorted(BOMBS))
async def test_a_compression_bomb_stops_at_the_cap_of_decoded_bytes(serve, name: str) -> None:
    async with serve(COMPRESSED) as url:
        tool = make_http_get([host_port(url)], max_bytes=256 * 1024)
        tracemalloc.start()
        try:
            with pytest.raises(ToolRefused, match="larger than the size cap of 262144 bytes"):
                await fetch(tool, f"{url}/bomb/{name}")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(BOMBS[name]) < 256 * 1024 < BOMB_BYTES  # it passed the length check: only decoding can stop it
    assert peak < 16 * 1024 * 1024  # the whole process, server included; inflating it all would be 64 MiB


async def test_compressed_pages_are_decoded_and_unasked_encodings_refused(serve) -> None:
    async with serve(COMPRESSED) as url:
        tool = make_http_get([host_port(url)])
        assert (await fetch(tool, f"{url}/small"))["text"] == "hello, compressed" * 3
        with pytest.raises(ToolError, match="encoding http_get did not ask for: 'br'"):
            await fetch(tool, f"{url}/br")


# --- proxies in the environment --------------------------------------------------------------------------------


class ProxyRecorder:
    """Test double of an HTTP proxy: answers every request itself and records that it was contacted."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def app(self, scope, receive, send) -> None:  # plain ASGI: whatever the path, it answers
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.seen.append(scope.get("raw_path", b"").decode())
        await PlainTextResponse("answered by the proxy")(scope, receive, send)


async def _hello(request: Request) -> Response:
    return PlainTextResponse("the real server")


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
async def test_proxy_variables_are_ignored(serve, monkeypatch, variable: str) -> None:
    proxy = ProxyRecorder()
    async with serve(proxy.app) as proxy_url, serve(Starlette(routes=[Route("/hello", _hello)])) as url:
        monkeypatch.setenv(variable, proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        # the test's own client shows the variable is live: httpx's default would go through the proxy
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{url}/hello")).text == "answered by the proxy"
        proxy.seen.clear()
        got = await fetch(make_http_get([host_port(url)]), f"{url}/hello")
    assert got["text"] == "the real server" and proxy.seen == []


# --- IPv6 allow-list entries -----------------------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
async def test_an_ipv6_entry_matches_a_server_on_ipv6_loopback(serve) -> None:
    async with serve(Starlette(routes=[Route("/hello", _hello)]), host="::1") as url:
        port = httpx.URL(url).port
        for entry in (f"[::1]:{port}", "[::1]", "::1", f"[0:0:0:0:0:0:0:1]:{port}"):
            got = await fetch(make_http_get([entry]), f"http://[::1]:{port}/hello")
            assert got["text"] == "the real server", entry
        with pytest.raises(ToolRefused, match=r"host '::1' \(port \d+\) is not on the http_get allow-list"):
            await fetch(make_http_get([f"[::1]:{port + 1 if port < 65535 else 1}"]), f"http://[::1]:{port}/hello")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(address=st.ip_addresses(v=6), port=st.integers(1, 65535), other=st.integers(1, 65535))
def test_ipv6_entries_match_their_address_and_port_only(address, port: int, other: int) -> None:
    url = httpx.URL(f"http://[{address.exploded}]:{port}/")
    HttpPolicy(allow=(f"[{address.compressed}]:{port}",)).check(url)
    HttpPolicy(allow=(f"[{address}]",)).check(url)
    if other != port:
        with pytest.raises(ToolRefused):
            HttpPolicy(allow=(f"[{address}]:{other}",)).check(url)


@pytest.mark.parametrize("entry", ["[::1", "[::1]x", "[::1]:http", "example.com:99999", "example.com:port", ":80"])
def test_a_malformed_entry_is_refused_when_the_policy_is_made(entry: str) -> None:
    with pytest.raises(ValueError, match="allow-list entry"):
        HttpPolicy(allow=(entry,))
