"""``http_get`` against a real loopback server (trio's real clock): allowed fetches, allow-list refusals
(before any connection, and on every redirect hop), the size cap, the timeout; and through the tool runner in
a realtime session."""

from __future__ import annotations

import httpx
import pytest
import trio

from microturn.actors.clock import ClockActor
from microturn.actors.tool_runner import ToolRunner
from microturn.messages import ToolCall, ToolResult
from microturn.runtime import open_session
from microturn.tools import HttpPolicy, ToolContext, ToolError, ToolRefused, ToolRegistry, make_http_get


def host_of(url: str) -> str:
    return httpx.URL(url).host + ":" + str(httpx.URL(url).port)


async def fetch(tool, url: str):
    with trio.fail_after(10):
        return await tool.invoke({"url": url}, ToolContext.standalone())


async def test_fetches_a_page_from_an_allowed_host(web_server) -> None:
    got = await fetch(make_http_get([host_of(web_server)]), f"{web_server}/hello")
    assert got == {"status": 200, "content_type": "text/plain; charset=utf-8", "text": "hello from the loopback server"}


async def test_http_errors_are_results_with_their_status(web_server) -> None:
    got = await fetch(make_http_get("127.0.0.1"), f"{web_server}/missing")  # one bare host, any port
    assert got["status"] == 404 and got["text"] == "no such page"


async def test_a_host_off_the_allow_list_is_refused_before_connecting(web_server) -> None:
    tool = make_http_get(["example.com"])
    with pytest.raises(ToolRefused, match=r"host '127\.0\.0\.1' \(port \d+\) is not on the http_get allow-list; "
                       r"allowed: example\.com"):
        await fetch(tool, f"{web_server}/hello")


async def test_the_default_allow_list_is_empty(monkeypatch) -> None:
    monkeypatch.delenv("MICROTURN_HTTP_ALLOW", raising=False)
    with pytest.raises(ToolRefused, match="allowed: none"):
        await fetch(make_http_get(HttpPolicy.from_env()), "http://127.0.0.1:9/")
    monkeypatch.setenv("MICROTURN_HTTP_ALLOW", "a.example, 127.0.0.1:8080 ,*.b.example")
    assert HttpPolicy.from_env().allow == ("a.example", "127.0.0.1:8080", "*.b.example")


def test_allow_list_entries_match_host_port_and_subdomains() -> None:
    policy = HttpPolicy(allow=("example.com:8080", "*.example.org"))
    policy.check(httpx.URL("http://example.com:8080/x"))
    policy.check(httpx.URL("https://api.example.org/x"))
    for refused in ["http://example.com/x", "http://example.org/x", "http://evil-example.org/", "ftp://example.com:8080/"]:
        with pytest.raises(ToolRefused):
            policy.check(httpx.URL(refused))


async def test_a_port_that_is_not_allowed_is_refused(web_server) -> None:
    with pytest.raises(ToolRefused, match="not on the http_get allow-list"):
        await fetch(make_http_get(["127.0.0.1:1"]), f"{web_server}/hello")


async def test_every_redirect_hop_is_checked(web_server) -> None:
    tool = make_http_get([host_of(web_server)])
    assert (await fetch(tool, f"{web_server}/redirect-inside"))["text"] == "hello from the loopback server"
    with pytest.raises(ToolRefused, match="host 'elsewhere.invalid'"):
        await fetch(tool, f"{web_server}/redirect-away")


async def test_a_declared_length_over_the_cap_is_refused(web_server) -> None:
    tool = make_http_get([host_of(web_server)], max_bytes=4096)
    with pytest.raises(ToolRefused, match=r"is 10000 bytes; the size cap is 4096 bytes"):
        await fetch(tool, f"{web_server}/big")
    assert len((await fetch(make_http_get([host_of(web_server)]), f"{web_server}/big"))["text"]) == 10_000


async def test_a_streamed_body_over_the_cap_is_cut_off(web_server) -> None:
    tool = make_http_get([host_of(web_server)], max_bytes=4096)
    with pytest.raises(ToolRefused, match="larger than the size cap of 4096 bytes"):
        await fetch(tool, f"{web_server}/big-stream")


async def test_a_server_that_never_answers_times_out(web_server) -> None:
    tool = make_http_get([host_of(web_server)], timeout=0.3)
    with pytest.raises(ToolError, match=r"did not answer within 0\.3 s"):
        await fetch(tool, f"{web_server}/never")


async def test_through_the_tool_runner_refusals_and_pages_are_results(web_server) -> None:
    registry = ToolRegistry([make_http_get([host_of(web_server)], timeout=5.0)])
    results: list[ToolResult] = []
    got_two = trio.Event()

    def tap(message) -> None:
        if isinstance(message, ToolResult):
            results.append(message)
            if len(results) == 2:
                got_two.set()

    with trio.fail_after(10):
        async with open_session([ClockActor(), ToolRunner(registry)], mode="realtime", taps=[tap]) as session:
            await session.publish(ToolCall(call_id="ok-1", name="http_get", args={"url": f"{web_server}/hello"}))
            await session.publish(ToolCall(call_id="no-1", name="http_get", args={"url": "http://example.com/"}))
            await got_two.wait()
    by_id = {r.call_id: r for r in results}
    assert by_id["ok-1"].ok and by_id["ok-1"].value["text"] == "hello from the loopback server"
    assert not by_id["no-1"].ok and "not on the http_get allow-list" in by_id["no-1"].error
