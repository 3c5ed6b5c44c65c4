"""``microturn serve`` keeps sglang's streaming-session rules, over real HTTP on loopback.

Turns are held in flight by a step hook (the test decides when they go on), idle time is advanced on the
server's injected clock: nothing here sleeps or depends on the machine's speed."""

from __future__ import annotations

import base64
import gc
import json
import weakref

import httpx
import pytest
import trio
from model_streams import step_inputs

torch = pytest.importorskip("torch")

from microturn.model.layout import DMEL, TickEncoder
from microturn.model.local import LocalSession
from microturn.model.protocol import ModelSpec


def _body(sid, enc, *, k=8, **extra):
    body = {"input_ids": enc.tokens, "session_params": {"id": sid, "rid": None},
            "sampling_params": {"max_new_tokens": k, "temperature": 0, "ignore_eos": False, "no_stop_trim": True,
                                "skip_special_tokens": False}}
    if enc.dmel or enc.patches:
        body["media"] = {"dmel": base64.b64encode(b"".join(enc.dmel)).decode(),
                         "patches": base64.b64encode(b"".join(enc.patches)).decode()}
    body.update(extra)
    return body


async def _open(client, **extra):
    r = await client.post("/open_session", json={"capacity_of_str_len": 1000, "streaming": True, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _chunks(server, n, seed=0):
    enc = TickEncoder(server.cfg.max_input_tokens)
    return [enc.encode(si) for si in step_inputs(n, seed)]


async def test_turns_append_and_cached_tokens_are_the_previous_prompt_plus_completion(url, server):
    async with httpx.AsyncClient(base_url=url) as c:
        sid = await _open(c)
        assert isinstance(sid, str)
        previous = None
        for i, enc in enumerate(_chunks(server, 6)):
            r = await c.post("/generate", json=_body(sid, enc))
            assert r.status_code == 200, r.text
            meta = r.json()["meta_info"]
            expected_cached = 0 if previous is None else previous["prompt_tokens"] + previous["completion_tokens"]
            assert meta["cached_tokens"] == expected_cached
            assert meta["prompt_tokens"] == expected_cached + len(enc.tokens)
            assert meta["completion_tokens"] == len(r.json()["output_ids"]) >= 1
            assert meta["finish_reason"]["type"] in ("length", "stop")
            previous = meta


async def test_outputs_equal_the_in_process_local_session(url, server, tiny_backend):
    local = LocalSession(tiny_backend.model, ModelSpec())
    async with httpx.AsyncClient(base_url=url) as c:
        sid = await _open(c)
        for si, enc in zip(step_inputs(12), _chunks(server, 12), strict=True):
            r = await c.post("/generate", json=_body(sid, enc))
            assert r.json()["output_ids"] == local.kv.step_encoded(local.kv.encoder.encode(si))


async def test_a_second_request_in_flight_is_refused_with_400(url, server, gate):
    chunks = _chunks(server, 3)
    async with httpx.AsyncClient(base_url=url) as c, trio.open_nursery() as nursery:
        sid = await _open(c)
        first: list[httpx.Response] = []

        async def hold():
            first.append(await c.post("/generate", json=_body(sid, chunks[0])))

        gate.arm(sid)
        nursery.start_soon(hold)
        await trio.to_thread.run_sync(gate.entered.wait)
        second = await c.post("/generate", json=_body(sid, chunks[1]))
        assert second.status_code == 400
        assert "already has an active request" in second.json()["error"]["message"]
        gate.release.set()
    assert first[0].status_code == 200
    assert first[0].json()["meta_info"]["finish_reason"]["type"] != "abort"


async def test_an_aborted_turn_is_rolled_back_bit_exactly(url, server, gate):
    chunks = _chunks(server, 12)
    async with httpx.AsyncClient(base_url=url) as c, trio.open_nursery() as nursery:
        aborted, never = await _open(c), await _open(c)
        for enc in chunks[:5]:
            for sid in (aborted, never):
                assert (await c.post("/generate", json=_body(sid, enc))).status_code == 200
        answers: list[httpx.Response] = []

        async def doomed():
            answers.append(await c.post("/generate", json=_body(aborted, chunks[5], rid="doomed-turn")))

        gate.arm(aborted)
        nursery.start_soon(doomed)
        await trio.to_thread.run_sync(gate.entered.wait)
        assert (await c.post("/abort_request", json={"rid": "doomed-turn"})).status_code == 200
        gate.release.set()
    answer = answers[0].json()
    assert answers[0].status_code == 200
    assert answer["meta_info"]["finish_reason"]["type"] == "abort"
    async with httpx.AsyncClient(base_url=url) as c:
        for enc in chunks[6:]:
            a = (await c.post("/generate", json=_body(aborted, enc))).json()
            b = (await c.post("/generate", json=_body(never, enc))).json()
            assert a["output_ids"] == b["output_ids"]
            assert a["meta_info"]["cached_tokens"] == b["meta_info"]["cached_tokens"]
            assert a["meta_info"]["prompt_tokens"] == b["meta_info"]["prompt_tokens"]
    ka, kb = server.sessions[aborted].kv, server.sessions[never].kv
    assert (ka.length, ka.carry, ka.ticks) == (kb.length, kb.carry, kb.ticks)


async def test_streaming_sessions_are_append_only(url, server):
    enc = _chunks(server, 1)[0]
    async with httpx.AsyncClient(base_url=url) as c:
        sid = await _open(c)
        assert (await c.post("/generate", json=_body(sid, enc))).status_code == 200
        for params, word in [({"replace": True}, "replace"), ({"offset": 3}, "offset"),
                             ({"drop_previous_output": True}, "drop_previous_output")]:
            r = await c.post("/generate", json=_body(sid, enc, session_params={"id": sid, **params}))
            assert r.status_code == 400
            assert f"do not support {word}" in r.json()["error"]["message"]
        r = await c.post("/open_session", json={"capacity_of_str_len": 10, "streaming": False})
        assert r.status_code == 400 and "streaming" in r.json()["error"]["message"]


async def test_an_idle_session_is_freed_after_its_timeout(url, server, clock):
    chunks = _chunks(server, 3)
    async with httpx.AsyncClient(base_url=url) as c:
        idle, busy = await _open(c, timeout=10), await _open(c, timeout=10)
        cache = weakref.ref(server.sessions[idle].kv)
        clock.advance(6)
        assert (await c.post("/generate", json=_body(busy, chunks[0]))).status_code == 200
        clock.advance(6)  # idle: 12 s without a request; busy: 6 s
        health = (await c.get("/health")).json()
        assert idle not in health["session_memory_bytes"] and busy in health["session_memory_bytes"]
        assert health["timed_out"] == 1
        gc.collect()
        assert cache() is None  # the timed-out session's cache is gone
        r = await c.post("/generate", json=_body(idle, chunks[1]))
        assert r.status_code == 400 and idle in r.json()["error"]["message"]
        clock.advance(11)
        assert (await c.get("/health")).json()["sessions"] == 0


async def test_close_frees_the_sessions_cache(url, server):
    async with httpx.AsyncClient(base_url=url) as c:
        sids = [await _open(c) for _ in range(3)]
        for sid in sids:
            for enc in _chunks(server, 4):
                await c.post("/generate", json=_body(sid, enc))
        health = (await c.get("/health")).json()
        per = health["session_memory_bytes"]
        assert health["sessions"] == 3 and all(per[s] > 0 for s in sids)
        assert health["memory_bytes"] == sum(per.values())
        cache = weakref.ref(server.sessions[sids[0]].kv)
        assert (await c.post("/close_session", json={"session_id": sids[0]})).status_code == 200
        health = (await c.get("/health")).json()
        assert health["sessions"] == 2 and health["memory_bytes"] == per[sids[1]] + per[sids[2]]
        gc.collect()
        assert cache() is None  # nothing holds the closed session's cache any more
        r = await c.post("/close_session", json={"session_id": sids[0]})
        assert r.status_code == 400 and sids[0] in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda b: b"{not json", ["not valid JSON"]),
        (lambda b: {**b, "input_ids": [1, "x"]}, ["$.input_ids[1]", "'x'"]),
        (lambda b: {**b, "sampling_params": {"max_new_tokens": "eight"}}, ["max_new_tokens", "'eight'"]),
        (lambda b: {**b, "sampling_params": {"max_new_tokens": 99}}, ["max_new_tokens", "99"]),
        (lambda b: {**b, "sampling_params": {"max_new_tokens": 4, "temperature": -1}}, ["temperature", "-1"]),
        (lambda b: {**b, "input_ids": [1, 99999]}, ["input_ids[1]", "99999"]),
        (lambda b: {**b, "session_params": {"id": "nope"}}, ["session_params.id", "'nope'"]),
        (lambda b: {**b, "session_params": {"rid": None}}, ["session_params", "id"]),
        (lambda b: {**b, "text": "hi"}, ["input_ids / text", "both"]),
        (lambda b: {**b, "input_ids": [DMEL], "media": {"dmel": "!!"}}, ["media.dmel", "base64", "'!!'"]),
        (lambda b: {**b, "input_ids": [DMEL, DMEL], "media": {"dmel": base64.b64encode(bytes(80)).decode()}},
         ["media.dmel", "2 DMEL positions", "1 frames"]),
        (lambda b: {**b, "input_ids": [], "media": None}, ["input_ids", "none"]),
    ],
)
async def test_malformed_bodies_get_400_naming_the_field_and_value(url, server, mutate, expected):
    async with httpx.AsyncClient(base_url=url) as c:
        sid = await _open(c)
        body = mutate(_body(sid, _chunks(server, 1)[0]))
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = await c.post("/generate", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        for part in expected:
            assert part in message, message


async def test_malformed_session_bodies_get_400_too(url):
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/open_session", json={"streaming": True, "timeout": "soon"})
        assert r.status_code == 400 and "timeout" in r.json()["error"]["message"]
        r = await c.post("/close_session", json={})
        assert r.status_code == 400 and "session_id" in r.json()["error"]["message"]


async def test_a_streamed_turn_sends_cumulative_events_then_done(url, server):
    chunks = _chunks(server, 4)
    async with httpx.AsyncClient(base_url=url) as c:
        streamed, plain = await _open(c), await _open(c)
        for enc in chunks[:3]:
            await c.post("/generate", json=_body(streamed, enc))
            await c.post("/generate", json=_body(plain, enc))
        events = []
        async with c.stream("POST", "/generate", json=_body(streamed, chunks[3], stream=True)) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line:
                    assert line.startswith("data: ")
                    events.append(line[6:])
        assert events[-1] == "[DONE]"
        final = json.loads(events[-2])
        expected = (await c.post("/generate", json=_body(plain, chunks[3]))).json()
        assert final["output_ids"] == expected["output_ids"]
        assert final["meta_info"]["cached_tokens"] == expected["meta_info"]["cached_tokens"]
        partial = [json.loads(e)["output_ids"] for e in events[:-2]]
        assert partial == [expected["output_ids"][: i + 1] for i in range(len(partial))]


async def test_health_model_info_flush_tokenize_and_one_shot_generate(url, server):
    async with httpx.AsyncClient(base_url=url) as c:
        assert (await c.get("/health")).json()["status"] == "ok"
        info = (await c.get("/get_model_info")).json()
        assert info["outputs_per_tick"] == server.cfg.outputs_per_tick
        assert info["max_input_tokens"] == server.cfg.max_input_tokens
        assert (await c.post("/flush_cache")).status_code == 200
        tok = (await c.post("/tokenize", json={"prompt": "hé"})).json()
        assert tok["tokens"] == list("hé".encode()) and tok["count"] == 3
        r = await c.post("/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 4}})
        assert r.status_code == 200 and 1 <= r.json()["meta_info"]["completion_tokens"] <= 4
        assert (await c.get("/health")).json()["sessions"] == 0


async def test_a_long_prompt_is_appended_in_pieces_and_still_rolls_back(url, server, gate):
    """The text bridge's first turn is longer than one tick: appended in pieces, undone from a snapshot."""
    text = "x" * (3 * server.cfg.max_chunk_tokens)
    async with httpx.AsyncClient(base_url=url) as c, trio.open_nursery() as nursery:
        a, b = await _open(c), await _open(c)
        body = {"text": "hello", "sampling_params": {"max_new_tokens": 8, "temperature": 0}}
        for sid in (a, b):
            await c.post("/generate", json={**body, "session_params": {"id": sid}})

        async def doomed():
            await c.post("/generate", json={**body, "text": text, "session_params": {"id": a}, "rid": "long"})

        gate.arm(a)
        nursery.start_soon(doomed)
        await trio.to_thread.run_sync(gate.entered.wait)
        await c.post("/abort_request", json={"rid": "", "abort_all": True})
        gate.release.set()
    async with httpx.AsyncClient(base_url=url) as c:
        ra = (await c.post("/generate", json={**body, "text": text, "session_params": {"id": a}})).json()
        rb = (await c.post("/generate", json={**body, "text": text, "session_params": {"id": b}})).json()
        assert ra["output_ids"] == rb["output_ids"]
        assert ra["meta_info"]["prompt_tokens"] == rb["meta_info"]["prompt_tokens"]
