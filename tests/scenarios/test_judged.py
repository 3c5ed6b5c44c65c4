"""Judged expectations: a criterion in plain words, decided by an OpenAI-compatible chat model.

The model here is a test double: ``JudgeServerDouble``, a real HTTP server on 127.0.0.1 that the test starts,
speaking the chat-completions streaming protocol, whose "model" passes a criterion "the assistant mentions
'WORD'" when an assistant line of the transcript it is sent holds WORD. So the verdict depends on what the
session did, and the tests see it pass and fail where it should, then replay with the server stopped."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.cli import main as cli_main
from microturn.messages import Verdict
from microturn.runtime import read_recording, replay, run_lockstep
from microturn.scenarios.expectations import judge as judge_expectations
from microturn.scenarios.format import ScenarioError, load_scenario, loads_scenario
from microturn.scenarios.judge import JUDGE_ENV, ChatJudge, parse_answer
from microturn.scenarios.runner import format_result, run_scenario

SCENARIO = """
name = "judged-window-seat"
category = "judged"
duration = 6.0

[model]
name = "scripted"

[[timeline]]
kind = "say"
at = 0.4
text = "I would like a window seat please"

[[expect]]
kind = "responds_within"
after = "user:turn_end"
budget_ms = 1000

[[expect]]
kind = "judged"
name = "repeats the seat"
criterion = "the assistant mentions 'window'"

[[expect]]
kind = "judged"
name = "offers an aisle"
criterion = "the assistant mentions 'aisle'"
"""


class JudgeServerDouble:
    """A stand-in for an OpenAI-compatible chat server (a test double): real HTTP on loopback, streamed
    answers, a rule for a model. ``requests`` keeps every body and Authorization header it got."""

    def __init__(self, answer: str | None = None) -> None:
        self.requests: list[tuple[dict, str | None]] = []
        self.answer = answer  # a fixed answer instead of the rule (to test bad answers)
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.requests.append((body, self.headers.get("Authorization")))
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                text = double.answer if double.answer is not None else double.decide(body["messages"][-1]["content"])
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in (text[: len(text) // 2], text[len(text) // 2 :]):  # two deltas, as a stream would
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def decide(prompt: str) -> str:
        criterion, _, transcript = prompt.partition("\n\nTranscript:\n")
        word = re.search(r"'([^']+)'", criterion).group(1)  # type: ignore[union-attr]
        said = [line for line in transcript.splitlines() if "] assistant" in line]
        hit = next((line for line in said if word.lower() in line.lower()), None)
        if hit is not None:
            return json.dumps({"verdict": "pass", "reason": f"the assistant said {word!r}: {hit.strip()}"})
        return "```json\n" + json.dumps({"verdict": "fail", "reason": f"no assistant line mentions {word!r}"}) + "\n```"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "judged-window-seat.toml"
    path.write_text(SCENARIO)
    return path


@pytest.fixture
def no_judge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No judge (and no reasoner) configured, whatever the machine's environment says."""
    for names in JUDGE_ENV.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)


def _by_name(result):
    return {o.name: o for o in result.outcomes}


def test_a_judged_expectation_passes_and_fails_where_it_should_and_replays_without_the_server(
    scenario_file: Path, tmp_path: Path, no_judge_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "judged.mtrec"
    with JudgeServerDouble() as server:
        monkeypatch.setenv("MICROTURN_JUDGE_URL", server.url)
        monkeypatch.setenv("MICROTURN_JUDGE_MODEL", "judge-double")
        monkeypatch.setenv("MICROTURN_JUDGE_API_KEY", "sk-test-secret")
        result = run_scenario(scenario_file, record=record)
        asked = list(server.requests)
    outcomes = _by_name(result)
    assert outcomes["repeats the seat"].ok and outcomes["repeats the seat"].verdict == "pass"
    assert "window" in outcomes["repeats the seat"].observed and "judge-double" in outcomes["repeats the seat"].observed
    assert not outcomes["offers an aisle"].ok and outcomes["offers an aisle"].verdict == "fail"
    assert "no assistant line mentions 'aisle'" in outcomes["offers an aisle"].observed
    assert result.verdict == "fail" and [o.name for o in result.failures] == ["offers an aisle"]
    # the model saw the conversation as heard, under the configured model name and key
    assert len(asked) == 2
    body, auth = asked[0]
    assert body["model"] == "judge-double" and auth == "Bearer sk-test-secret"
    prompt = body["messages"][-1]["content"]
    assert "user: I would like a window seat please" in prompt and "] assistant: " in prompt
    assert "sk-test-secret" not in read_recording(record).messages.__repr__()

    # the server is gone: the recording holds the verdicts, replay reproduces them bit for bit ...
    rec = read_recording(record)
    recorded = [m for m in rec.messages if isinstance(m, Verdict)]
    assert [(v.expectation, v.verdict) for v in recorded] == [(1, "pass"), (2, "fail")]
    assert all(v.stamp is not None and v.stamp.source == "judge" for v in recorded)
    replayed = run_lockstep(lambda: replay(rec))
    assert replayed.ok, replayed.divergence
    assert cli_main(["replay", str(record)]) == 0
    # ... and judging the recorded messages again gives the same verdicts, with no model to ask
    again = judge_expectations(load_scenario(scenario_file), rec.messages)
    assert [(o.name, o.verdict, o.observed) for o in again[1:]] == [
        (o.name, o.verdict, o.observed) for o in result.outcomes[1:]
    ]


def test_without_a_judge_it_is_not_judged_never_passed(scenario_file: Path, no_judge_env: None) -> None:
    result = run_scenario(scenario_file)
    judged = [o for o in result.outcomes if o.name in ("repeats the seat", "offers an aisle")]
    assert [o.verdict for o in judged] == ["not judged", "not judged"]
    assert not any(o.ok for o in judged)
    assert all("no judge is configured" in o.observed and "MICROTURN_JUDGE_URL" in o.observed for o in judged)
    assert not result.ok and result.verdict == "not judged" and not result.failures
    text = format_result(result)
    assert "N/J   repeats the seat" in text and "NOT JUDGED judged-window-seat" in text and "PASS judged" not in text


def test_run_exits_4_when_only_judged_expectations_were_not_judged(
    scenario_file: Path, no_judge_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["run", str(scenario_file)]) == 4
    assert "NOT JUDGED" in capsys.readouterr().out


def test_a_judged_failure_exits_1(scenario_file: Path, no_judge_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with JudgeServerDouble() as server:
        monkeypatch.setenv("MICROTURN_REASONER_URL", server.url)  # the background reasoner's configuration serves
        assert cli_main(["run", str(scenario_file)]) == 1
        assert len(server.requests) == 2


@pytest.mark.parametrize(
    "answer, why",
    [
        ("I think it passes.", "not a JSON object"),
        ('{"verdict": "maybe", "reason": "unsure"}', "no verdict 'pass' or 'fail'"),
        ('{"reason": "forgot the verdict"}', "no verdict 'pass' or 'fail'"),
    ],
)
def test_an_answer_that_is_no_verdict_is_not_judged(scenario_file: Path, answer: str, why: str) -> None:
    with JudgeServerDouble(answer=answer) as server:
        judge = ChatJudge.from_env({"MICROTURN_JUDGE_URL": server.url})
        result = run_scenario(scenario_file, judge=judge)
    judged = [o for o in result.outcomes if o.name in ("repeats the seat", "offers an aisle")]
    assert [o.verdict for o in judged] == ["not judged", "not judged"]
    assert all(why in o.observed for o in judged)


def test_a_judge_that_cannot_be_reached_is_not_judged(scenario_file: Path) -> None:
    server = JudgeServerDouble()  # bound, never served, then closed: nothing listens on its port
    url = server.url
    server.server.server_close()
    judge = ChatJudge.from_env({"MICROTURN_JUDGE_URL": url}, connect_timeout=2.0, timeout=2.0)
    result = run_scenario(scenario_file, judge=judge)
    judged = [o for o in result.outcomes if o.name == "repeats the seat"]
    assert judged[0].verdict == "not judged" and "the judge could not be asked" in judged[0].observed


def test_a_bad_judge_url_is_a_clear_error(scenario_file: Path, no_judge_env: None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROTURN_JUDGE_URL", "ftp://example")
    with pytest.raises(ScenarioError, match="MICROTURN_JUDGE_URL.*http"):
        run_scenario(scenario_file)


def test_a_judged_expectation_needs_a_criterion() -> None:
    with pytest.raises(ScenarioError, match=r"expect\[0\]\.criterion"):
        loads_scenario('[[expect]]\nkind = "judged"\ncriterion = ""\n')
    with pytest.raises(ScenarioError, match=r"expect\[0\]\.criterion.*missing required key"):
        loads_scenario('[[expect]]\nkind = "judged"\n')


_TEXT = st.text(st.characters(blacklist_characters="{}"), max_size=40)


@settings(max_examples=200, derandomize=True)
@given(verdict=st.sampled_from(["pass", "fail", "PASS", " Fail "]), reason=st.text(max_size=80), before=_TEXT,
       after=_TEXT)
def test_a_verdict_object_is_found_wherever_it_sits_in_the_answer(verdict: str, reason: str, before: str,
                                                                   after: str) -> None:
    answer = before + json.dumps({"verdict": verdict, "reason": reason}) + after
    got, why = parse_answer(answer)
    assert got == verdict.strip().lower()
    assert len(why) <= 500 and why


@settings(max_examples=200, derandomize=True)
@given(answer=st.one_of(_TEXT, st.builds(json.dumps, st.dictionaries(st.text(max_size=8), st.integers()))))
def test_anything_else_is_not_judged(answer: str) -> None:
    got, why = parse_answer(answer)
    assert got == "not_judged" and why
