"""The web server over real loopback: a Python websocket client talks to a server the test starts (scripted
model, realtime clock). Bounds are generous: these assert behaviour, never machine speed."""

from __future__ import annotations

import json

import pytest
import trio

pytest.importorskip("starlette")
pytest.importorskip("hypercorn")
websockets = pytest.importorskip("websockets")

from microturn.assembly import PipelineSpec
from microturn.web import WebLimits, WebServer, open_web
from microturn.web.wire import MAX_PCM_BYTES, FrameError, decode_client


def _spec() -> PipelineSpec:
    return PipelineSpec(model="scripted", render_audio=True)


async def _frames_until(ws, want, limit: float = 20.0) -> list[dict]:
    """Frames until ``want(frames)`` holds (a generous real-time bound: the scripted model answers in ticks)."""
    frames: list[dict] = []
    with trio.fail_after(limit):
        while not want(frames):
            frames.append(json.loads(await trio.to_thread.run_sync(ws.recv)))
    return frames


def _connect(url: str):
    from websockets.sync.client import connect

    return connect(url.replace("http://", "ws://") + "/ws", max_size=1 << 22).__enter__()


async def test_page_is_served_and_other_paths_are_not() -> None:
    import urllib.request

    async with open_web(WebServer(_spec()), port=0) as url:
        html = await trio.to_thread.run_sync(lambda: urllib.request.urlopen(url + "/").read().decode())
        assert "/static/app.js" in html and "<script src=\"http" not in html  # no CDN
        js = await trio.to_thread.run_sync(lambda: urllib.request.urlopen(url + "/static/app.js").read())
        assert b"__microturn" in js
        for bad in ("/static/..%2Fapp.py", "/static/app.py"):
            with pytest.raises(Exception, match="404"):
                await trio.to_thread.run_sync(lambda b=bad: urllib.request.urlopen(url + b))


async def test_typed_line_gets_spoken_answer_with_audio_and_words(tmp_path) -> None:
    async with open_web(WebServer(_spec(), record=tmp_path), port=0) as url:
        ws = await trio.to_thread.run_sync(_connect, url)
        try:
            ws.send(json.dumps({"type": "text", "v": 1, "text": "hello there"}))
            frames = await _frames_until(ws, lambda fs: any(f["type"] == "audio_out" for f in fs)
                                         and any(f["type"] == "words" and f["role"] == "assistant" for f in fs))
        finally:
            ws.close()
    kinds = {f["type"] for f in frames}
    assert {"words", "audio_out", "state"} <= kinds
    assert frames[0] == {"type": "words", "v": 1, "role": "user", "text": "hello there", "utterance_id": 0}
    audio = [f for f in frames if f["type"] == "audio_out"]
    assert all(f["sample_rate"] > 0 and f["pcm"] for f in audio)
    assert list(tmp_path.glob("web-*.mtrec"))  # one recording for the session


async def test_bad_frames_answer_error_naming_field_and_value_and_session_goes_on() -> None:
    async with open_web(WebServer(_spec()), port=0) as url:
        ws = await trio.to_thread.run_sync(_connect, url)
        try:
            for bad, field in (("not json", "frame"), ('{"type":"text","v":2,"text":"x"}', "v"),
                               ('{"type":"text","v":1,"text":""}', "text"), ('{"type":"nope","v":1}', "type"),
                               ('{"type":"played","v":1,"samples":"x"}', "samples")):
                ws.send(bad)
                (err,) = await _frames_until(ws, lambda fs: any(f["type"] == "error" for f in fs))
                assert err["field"] == field, (bad, err)
            ws.send(json.dumps({"type": "text", "v": 1, "text": "still there?"}))
            frames = await _frames_until(ws, lambda fs: any(f["type"] == "words" and f["role"] == "assistant"
                                                            for f in fs))
            assert frames[0]["text"] == "still there?"
        finally:
            ws.close()


async def test_session_cap_refuses_extra_socket() -> None:
    async with open_web(WebServer(_spec(), limits=WebLimits(max_sessions=1)), port=0) as url:
        first = await trio.to_thread.run_sync(_connect, url)
        try:
            first.send(json.dumps({"type": "text", "v": 1, "text": "hi"}))
            await _frames_until(first, lambda fs: bool(fs))
            with pytest.raises(Exception):  # noqa: B017 - refused at the handshake or closed at once
                second = await trio.to_thread.run_sync(_connect, url)
                await trio.to_thread.run_sync(second.recv)
        finally:
            first.close()


def test_decode_client_refuses_out_of_range_values_naming_them() -> None:
    import base64

    big = base64.b64encode(b"\0" * (MAX_PCM_BYTES + 2)).decode()
    for data, field in ((f'{{"type":"audio","v":1,"pcm":"{big}"}}', "pcm"),
                        ('{"type":"audio","v":1,"pcm":"AAAA"}', "pcm"),
                        ('{"type":"played","v":1,"samples":-1}', "samples"),
                        ("x" * 70000, "frame")):
        with pytest.raises(FrameError) as info:
            decode_client(data)
        assert info.value.field == field
    assert decode_client('{"type":"played","v":1,"samples":5}').samples == 5


async def test_concurrent_sessions_get_only_their_own_frames() -> None:
    """Several sockets on one server, each with its own line: every session's echo is its own and each gets audio."""
    n = 4  # 20 did not finish within 90 s on the shared 2-core machine: see docs/decisions.md

    async with open_web(WebServer(_spec()), port=0) as url:
        got: dict[int, list[dict]] = {}

        async def one(i: int) -> None:
            ws = await trio.to_thread.run_sync(_connect, url)
            try:
                ws.send(json.dumps({"type": "text", "v": 1, "text": f"session number {i}"}))
                got[i] = await _frames_until(ws, lambda fs: any(f["type"] == "audio_out" for f in fs), limit=90)
            finally:
                ws.close()

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
    assert sorted(got) == list(range(n))
    for i, frames in got.items():
        users = [f["text"] for f in frames if f["type"] == "words" and f["role"] == "user"]
        assert users == [f"session number {i}"]
