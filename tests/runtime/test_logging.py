"""Logging: every event carries session time, tick and actor; JSON lines go to a file when asked."""

import json

from microturn.actors import ClockActor
from microturn.messages import Tick
from microturn.runtime import Actor, capture_logs, configure_logging, open_session


class Chatty(Actor):
    """Test double: logs on every tick."""

    subscriptions = (Tick,)

    async def handle(self, message):
        self.log.info("tick_seen", seen=message.tick)


async def test_events_carry_session_time_tick_and_actor(autojump_clock):
    with capture_logs() as logs:
        async with open_session([ClockActor(), Chatty()], session_id="s1") as session:
            await session.run_ticks(3)
    events = [e for e in logs if e["event"] == "tick_seen"]
    assert [e["seen"] for e in events] == [0, 1, 2]
    assert [e["tick"] for e in events] == [1, 2, 3]  # Tick(k) closes window k: window k + 1 is now open
    assert [e["t"] for e in events] == [0.2, 0.4, 0.6]
    assert {e["actor"] for e in events} == {"chatty"} and {e["session"] for e in events} == {"s1"}


async def test_json_lines_to_a_file(autojump_clock, tmp_path):
    path = tmp_path / "log.jsonl"
    try:
        configure_logging("info", json_file=str(path))
        async with open_session([ClockActor(), Chatty()], session_id="s2") as session:
            await session.run_ticks(2)
    finally:
        configure_logging()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    seen = [line for line in lines if line["event"] == "tick_seen"]
    assert len(seen) == 2 and seen[1]["tick"] == 2 and seen[1]["actor"] == "chatty" and seen[1]["t"] == 0.4
    assert all("timestamp" not in line for line in lines)  # no wall-clock time stands in for session time
