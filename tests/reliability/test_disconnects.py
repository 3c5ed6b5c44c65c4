"""Clients that hang up at every point of a plain and a streamed /generate never take the server down, and
never change what other sessions get."""

from __future__ import annotations

import json
import random
import socket

import httpx
import pytest
from model_streams import step_inputs
from serve_harness import hang_up, http_request, native_body, read_until

from microturn.model.config import tiny
from microturn.model.layout import TickEncoder

STAGES = ("head", "body", "sent", "status", "one_event", "two_events")
"""Where a client hangs up: mid request head, mid body, right after sending, after the status line, after
one SSE event, after two."""


def chunks(n: int, seed: int):
    enc = TickEncoder(tiny().max_input_tokens)
    return [enc.encode(si) for si in step_inputs(n, seed)]


def open_session(client: httpx.Client) -> str:
    r = client.post("/open_session", json={"capacity_of_str_len": 1000, "streaming": True})
    assert r.status_code == 200, r.text
    return r.json()


def killed_request(address, body: dict, stage: str) -> None:
    """Send ``body`` to /generate and hang up at ``stage``."""
    data = http_request(address, "/generate", json.dumps(body).encode())
    head_end = data.index(b"\r\n\r\n") + 4
    with socket.create_connection(address, timeout=60) as sock:
        if stage == "head":
            sock.sendall(data[:head_end // 2])
        elif stage == "body":
            sock.sendall(data[:head_end + (len(data) - head_end) // 2])
        else:
            sock.sendall(data)
            if stage == "status":
                read_until(sock, b"\r\n")
            elif stage == "one_event":
                read_until(sock, b"\n\n", 1)
            elif stage == "two_events":
                read_until(sock, b"\n\n", 2)
        hang_up(sock)


def settle(client: httpx.Client, sid: str) -> None:
    """Wait (by asking, not sleeping) until no turn of ``sid`` is in flight: a turn whose client hung up may
    still be finishing its current token."""
    for _ in range(10_000):
        if client.get("/health").json()["inflight"] == 0:
            return
    raise AssertionError(f"session {sid}: a turn stayed in flight")


def post_when_free(client: httpx.Client, body: dict) -> httpx.Response:
    """POST a turn, again while the server answers that the session's previous turn (one whose client hung up,
    which the server may read only now) is still being aborted: the protocol's one request in flight."""
    for _ in range(10_000):
        r = client.post("/generate", json=body)
        if r.status_code != 400 or "already has an active request" not in r.text:
            return r
    raise AssertionError("the session stayed busy")


def test_a_streaming_client_that_hangs_up_after_one_event_never_kills_the_server(served):
    """The reported crash, five times over: open a session, stream a turn, read one event, close."""
    enc = chunks(1, 0)[0]
    with httpx.Client(base_url=served.url, timeout=60) as c:
        for _ in range(5):
            sid = open_session(c)
            killed_request(served.address, native_body(sid, enc, stream=True), "one_event")
            assert served.alive()
            r = post_when_free(c, native_body(sid, enc))
            assert r.status_code == 200, r.text  # the session is not stuck with a dead turn
        assert c.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("stream", [False, True])
def test_every_hang_up_point_leaves_the_server_and_the_session_usable(served, stage, stream):
    enc = chunks(2, 1)
    with httpx.Client(base_url=served.url, timeout=60) as c:
        sid = open_session(c)
        killed_request(served.address, native_body(sid, enc[0], stream=stream), stage)
        assert served.alive()
        r = post_when_free(c, native_body(sid, enc[1]))
        assert r.status_code == 200, r.text
        assert c.post("/close_session", json={"session_id": sid}).status_code == 200


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streams_killed_at_ten_seeded_points_change_no_other_sessions_outputs(served, seed):
    """Two sessions run the same ticks twice: alone, then interleaved with a victim session whose requests are
    killed at 10 points drawn from ``seed``. The two get identical outputs both times."""
    n = 12
    inputs = {name: chunks(n, 100 * seed + i) for i, name in enumerate(("a", "b"))}
    rng = random.Random(seed)
    kills = {tick: (rng.choice(STAGES), rng.random() < 0.7) for tick in rng.sample(range(n), 10)}
    victim_inputs = chunks(n, 100 * seed + 7)

    def run(with_faults: bool) -> dict[str, list]:
        out: dict[str, list] = {"a": [], "b": []}
        with httpx.Client(base_url=served.url, timeout=60) as c:
            sids = {name: open_session(c) for name in out}
            victim = open_session(c)
            for t in range(n):
                out["a"].append(c.post("/generate", json=native_body(sids["a"], inputs["a"][t])).json())
                if with_faults and t in kills:
                    stage, stream = kills[t]
                    killed_request(served.address, native_body(victim, victim_inputs[t], stream=stream), stage)
                elif with_faults:
                    c.post("/generate", json=native_body(victim, victim_inputs[t]))
                out["b"].append(c.post("/generate", json=native_body(sids["b"], inputs["b"][t])).json())
            settle(c, victim)
            for sid in [*sids.values(), victim]:
                assert c.post("/close_session", json={"session_id": sid}).status_code == 200
        return {name: [(a["output_ids"], a["meta_info"]["prompt_tokens"], a["meta_info"]["cached_tokens"])
                       for a in answers] for name, answers in out.items()}

    alone = run(with_faults=False)
    faulted = run(with_faults=True)
    assert served.alive()
    assert faulted == alone


def test_a_client_stalled_mid_body_holds_up_nobody(served):
    """A slow client (half a body, then nothing) does not stop other sessions from being served."""
    enc = chunks(3, 5)
    data = http_request(served.address, "/generate", json.dumps(native_body(None, enc[0])).encode())
    with socket.create_connection(served.address, timeout=60) as slow, \
            httpx.Client(base_url=served.url, timeout=60) as c:
        slow.sendall(data[:len(data) - 10])
        sid = open_session(c)
        for e in enc:
            assert c.post("/generate", json=native_body(sid, e)).status_code == 200
        hang_up(slow)
    assert served.alive()
