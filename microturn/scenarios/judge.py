"""The judge of ``kind = "judged"`` expectations: any OpenAI-compatible chat model, through the background
reasoner's client (:class:`~microturn.actors.OpenAIChatReasoner`).

Configured by the environment, as the reasoner is, with judge-specific variables first:
``MICROTURN_JUDGE_URL`` (else ``MICROTURN_REASONER_URL``, else ``OPENAI_BASE_URL``), ``MICROTURN_JUDGE_MODEL``
(else the reasoner's model variables) and ``MICROTURN_JUDGE_API_KEY`` (else the reasoner's key variables). No
URL: no judge, and every judged expectation is *not judged*.

At the end of a scenario's session the runner hands the judge the conversation as the user heard it (what the
user said, what the assistant said as heard with its cuts, tool calls and background results, with session
times) and each criterion; the judge answers a JSON object ``{"verdict": "pass" | "fail", "reason": "..."}``.
Each answer becomes a :class:`~microturn.messages.Verdict` message in the session (source ``judge``), so the
recording holds it: replay re-publishes it as a recorded input and re-judging reads it, with no model.

The call blocks the session's trio loop on purpose: a lockstep session's virtual clock must not move while the
model thinks (an async wait would let the autojump clock run the session on), so the client runs in its own
trio loop on a worker thread and the session waits for it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import msgspec
import trio

from microturn.actors.openai_reasoner import OpenAIChatReasoner
from microturn.actors.reasoner_api import REASONER_ENV, ReasonerError
from microturn.messages import BackgroundUpdate, Message, ToolCall, ToolResult, Verdict

from .expectations import observe
from .format import Judged, Noise, Pause, Say, Scenario
from .triggers import Fired

__all__ = ["JUDGE_ENV", "JUDGE_PROMPT", "ChatJudge", "Judge", "judge_from_env", "transcript", "verdicts"]

JUDGE_ENV = {key: (f"MICROTURN_JUDGE_{key.upper()}", *names) for key, names in REASONER_ENV.items()}
"""Environment variables the judge reads, first found wins: its own, then the background reasoner's."""

JUDGE_PROMPT = (
    "You are the judge of a test of a real-time voice assistant. You read the transcript of one conversation: "
    "what the user said, and what the user actually heard of the assistant (cut-off speech is marked), with "
    "session times in seconds. Decide whether the criterion holds for this conversation. Reply with only a JSON "
    'object: {"verdict": "pass" or "fail", "reason": "one short sentence that cites the transcript"}.'
)

MAX_TRANSCRIPT_LINES = 400
"""Lines of transcript sent to the judge at most (a long session keeps its first ones and says how many went)."""
MAX_LINE_CHARS = 400
MAX_REASON_CHARS = 500
"""A judge's reason is cut to this many characters before it goes into the recording."""


class Judge(Protocol):
    """Decides one criterion on a transcript."""

    name: str

    def decide(self, criterion: str, transcript: str) -> tuple[str, str]:
        """``("pass" | "fail" | "not_judged", reason)``; never raises for the model's failures."""
        ...


class ChatJudge:
    """A judge behind an OpenAI-compatible chat-completions endpoint (the background reasoner's client)."""

    def __init__(self, client: OpenAIChatReasoner) -> None:
        self.client = client
        self.name = client.model

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> ChatJudge | None:
        """The judge :data:`JUDGE_ENV` configures, or None when no URL is set. ``kwargs`` go to the client
        (``timeout``, ``transport``...)."""
        env = os.environ if env is None else env

        def first(key: str) -> str | None:
            return next((env[v] for v in JUDGE_ENV[key] if env.get(v)), None)

        url = first("url")
        if url is None:
            return None
        try:
            client = OpenAIChatReasoner(url, first("model") or "default", first("api_key"), system_prompt=JUDGE_PROMPT,
                                        **kwargs)
        except ValueError as exc:
            raise ValueError(f"the judge's URL (one of {', '.join(JUDGE_ENV['url'])}): {exc}") from None
        return cls(client)

    def __repr__(self) -> str:
        return f"ChatJudge({self.client!r})"

    def decide(self, criterion: str, transcript: str) -> tuple[str, str]:
        """Ask the model; a failure to ask or an answer that is no verdict is ``not_judged`` with why."""
        messages = [
            {"role": "system", "content": JUDGE_PROMPT},
            {"role": "user", "content": f"Criterion: {criterion}\n\nTranscript:\n{transcript}"},
        ]
        try:
            answer = _blocking(lambda: self.client.complete(messages))
        except ReasonerError as exc:
            return "not_judged", _cut(f"the judge could not be asked: {exc}")
        return parse_answer(answer)


def judge_from_env(env: Mapping[str, str] | None = None) -> Judge | None:
    """The configured judge, or None (see :data:`JUDGE_ENV`)."""
    return ChatJudge.from_env(env)


def _blocking(fn: Any) -> Any:
    """Run the coroutine function ``fn`` to completion in a fresh trio loop on a worker thread, and wait for
    it here without yielding (see the module docstring for why)."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = trio.run(fn)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=work, name="microturn-judge", daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _cut(text: str, limit: int = MAX_REASON_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_answer(answer: str) -> tuple[str, str]:
    """A judge's answer made into ``(verdict, reason)``: the JSON object in it (a code fence around it is
    fine), whose ``verdict`` is ``pass`` or ``fail``; anything else is ``not_judged``, quoting the answer."""
    found = _OBJECT.search(answer)
    parsed: Any = None
    if found is not None:
        try:
            parsed = msgspec.json.decode(found.group(0))
        except msgspec.DecodeError:
            parsed = None
    if not isinstance(parsed, dict):
        return "not_judged", _cut(f"the judge's answer is not a JSON object: {answer!r}")
    verdict = parsed.get("verdict")
    if not isinstance(verdict, str) or verdict.strip().lower() not in ("pass", "fail"):
        return "not_judged", _cut(f"the judge's answer has no verdict 'pass' or 'fail': verdict = {verdict!r}")
    reason = parsed.get("reason")
    return verdict.strip().lower(), _cut(reason if isinstance(reason, str) and reason.strip() else "(no reason given)")


def transcript(scenario: Scenario, messages: Sequence[Message], fired: Sequence[Fired]) -> str:
    """The conversation as the user heard it, one line per turn, with session times (what the judge reads)."""
    rows: list[tuple[float, int, str]] = []
    for f in fired:
        event = scenario.timeline[f.index]
        if isinstance(event, Say):  # an interrupt is a say too
            rows.append((f.start, 0, f"user: {event.text}"))
        elif isinstance(event, Noise):
            rows.append((f.start, 0, f"user: ({type(event).__name__.lower()})"))
        elif isinstance(event, Pause):
            rows.append((f.start, 0, f"user: (pauses {event.duration:g} s)"))
    for u in observe(messages).utterances:
        if not u.text:
            continue
        when = u.first_word if u.first_word is not None else u.started
        cut = " (cut off here)" if u.truncated or u.reason == "interrupted" else ""
        kind = " (backchannel)" if u.backchannel else ""
        rows.append((when, 1, f"assistant{kind}: {u.text}{cut}"))
    for m in messages:
        t = m.stamp.time if m.stamp is not None else 0.0
        if isinstance(m, ToolCall):
            args = ", ".join(f"{k}={v!r}" for k, v in m.args.items())
            rows.append((t, 2, f"tool call: {m.name}({args})"))
        elif isinstance(m, ToolResult):
            rows.append((t, 2, f"tool result: {m.value!r}" if m.ok else f"tool failed: {m.error}"))
        elif isinstance(m, BackgroundUpdate) and m.status in ("final", "failed"):
            rows.append((t, 2, f"background {m.status}: {m.text}"))
    rows.sort(key=lambda r: (r[0], r[1]))
    lines = [f"[{t:7.3f} s] {_cut(text, MAX_LINE_CHARS)}" for t, _, text in rows]
    if len(lines) > MAX_TRANSCRIPT_LINES:
        left = len(lines) - MAX_TRANSCRIPT_LINES
        lines = [*lines[:MAX_TRANSCRIPT_LINES], f"(… {left} more lines left out)"]
    return "\n".join(lines) or "(nothing was said)"


NO_JUDGE = (
    "no judge is configured: set MICROTURN_JUDGE_URL (or MICROTURN_REASONER_URL / OPENAI_BASE_URL) to an "
    "OpenAI-compatible endpoint, and MICROTURN_JUDGE_MODEL / MICROTURN_JUDGE_API_KEY as it needs"
)


def verdicts(
    judge: Judge | None, scenario: Scenario, messages: Sequence[Message], fired: Sequence[Fired]
) -> list[Verdict]:
    """One :class:`Verdict` per judged expectation of ``scenario`` (``not_judged`` ones when ``judge`` is None)."""
    judged = [(i, e) for i, e in enumerate(scenario.expect) if isinstance(e, Judged)]
    if not judged:
        return []
    text = transcript(scenario, messages, fired) if judge is not None else ""
    out = []
    for index, expectation in judged:
        if judge is None:
            verdict, reason, name = "not_judged", NO_JUDGE, ""
        else:
            verdict, reason = judge.decide(expectation.criterion, text)
            name = judge.name
        out.append(Verdict(expectation=index, criterion=expectation.criterion, verdict=verdict,  # type: ignore[arg-type]
                           reason=reason, judge=name))
    return out
