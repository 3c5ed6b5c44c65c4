"""Simulated users: a scenario's ``[user]`` table (persona, goal, behaviour rates, ``runs`` and ``seed``)
becomes ``runs`` ordinary scenarios, one per seed, each with a timeline the simulator wrote.

The offline simulator is a goal-and-slot state machine: the goal text picks an intent (book a table, set a
timer, ask a fact, calculate) with its slots; the first turn states the intent, each later turn - said after
the assistant's previous answer ends (``assistant_stops_speaking#N``) - supplies one missing slot, and the last
says goodbye. Phrasing, slot values, pauses mid-thought, backchannels and barge-ins are drawn from
``random.Random(seed)`` only, never the wall clock. Because the simulator's output is a plain timeline, the
session records its events as inputs and replay re-publishes them bit-exact without running the simulator.
"""

from __future__ import annotations

import os
import random
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import msgspec

from microturn.actors.openai_reasoner import OpenAIChatReasoner
from microturn.actors.reasoner_api import REASONER_ENV, ReasonerError

from .format import MAX_SCENARIO_BYTES, Event, Interrupt, Judged, Pause, Say, Scenario, ScenarioError, validate
from .judge import _blocking

__all__ = [
    "MAX_RUNS", "MAX_TURNS", "SIMULATOR_ENV", "ChatSimulator", "OfflineSimulator", "UserConfig", "UserSimulator", "aggregate", "expand", "format_aggregate", "goal_reached",
    "load_simulated", "record_path", "simulated_runs", "simulator_from_env", "timeline",
]

MAX_RUNS = 100
"""Runs one simulated-user scenario may ask for at most."""
MAX_TURNS = 20
"""User turns one simulated run may take at most."""

Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class UserConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[user]`` table of a simulated-user scenario."""

    persona: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    goal: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    success: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    barge_in: Rate = 0.0
    backchannel: Rate = 0.0
    pause_mid_thought: Rate = 0.0
    mode: Literal["text", "speech"] = "text"
    voice: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] | None = None
    max_turns: Annotated[int, msgspec.Meta(ge=1, le=MAX_TURNS)] = 6
    runs: Annotated[int, msgspec.Meta(ge=1, le=MAX_RUNS)] = 1
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = 0


class UserSimulator(Protocol):
    """Writes the user's side of one run: timeline events (turns, barge-ins, backchannels, pauses)."""

    name: str

    def plan(self, user: UserConfig, seed: int) -> list[Event]:
        """The user's timeline for the run with ``seed``; a pure function of its arguments."""
        ...


_DAYS = ["monday", "tuesday", "friday", "saturday", "sunday"]
_TIMES = ["six", "seven", "eight", "half past seven"]
_TOPICS = ["the capital of france", "how tall mount everest is", "when the moon landing was"]

# intent: (goal keywords, opening phrasings, {slot: (value choices, phrasings with {v})})
_INTENTS: dict[str, tuple[tuple[str, ...], list[str], dict[str, tuple[list[Any], list[str]]]]] = {
    "book_table": (
        ("book", "table", "restaurant", "reserv", "dinner"),
        ["I'd like to book a table", "can I reserve a table please", "hi, I want to book a table for dinner"],
        {
            "day": (_DAYS, ["on {v}", "it's for {v}", "{v} would be good"]),
            "time": (_TIMES, ["at {v}", "around {v} in the evening", "let's say {v}"]),
            "people": ([2, 3, 4, 6], ["for {v} people", "we are {v}", "a table for {v}"]),
        },
    ),
    "timer": (
        ("timer", "remind", "alarm", "minute"),
        ["set a timer please", "can you start a timer for me", "I need a timer"],
        {"minutes": ([3, 5, 10, 15, 25], ["for {v} minutes", "make it {v} minutes", "{v} minutes please"])},
    ),
    "calculate": (
        ("calcul", "math", "sum", "add", "multipl"),
        ["can you help me with a sum", "I need to calculate something", "quick calculation please"],
        {"numbers": ([(12, 7), (40, 2), (9, 13)], ["what is {a} times {b}", "multiply {a} by {b}"])},
    ),
    "fact": (
        (),
        ["I have a question", "can you tell me something", "quick question for you"],
        {"topic": (_TOPICS, ["what is {v}", "tell me {v}", "do you know {v}"])},
    ),
}
_GOODBYES = ["thanks, goodbye", "great, that's all, bye", "perfect, thank you, bye"]
_BACKCHANNELS = ["yeah", "mhm", "okay", "right"]
_BARGE_INS = ["wait, stop", "sorry, hold on", "no no, wait"]


def intent_of(goal: str) -> str:
    """The intent the goal's words name (the first whose keyword occurs; ``fact`` when none does)."""
    text = goal.lower()
    return next((name for name, (words, _, _) in _INTENTS.items() if any(w in text for w in words)), "fact")


class OfflineSimulator:
    """The deterministic goal-and-slot user (see the module docstring)."""

    name = "offline"

    def plan(self, user: UserConfig, seed: int) -> list[Event]:
        """One turn stating the intent, one per slot, then goodbye, cut to ``max_turns``; every choice seeded."""
        rng = random.Random(seed)
        return timeline(user, self.lines(user, rng), rng)

    def lines(self, user: UserConfig, rng: random.Random) -> list[str]:
        """What the user says, turn by turn."""
        _, openings, slots = _INTENTS[intent_of(user.goal)]
        lines = [rng.choice(openings)]
        for values, phrasings in slots.values():
            value = rng.choice(values)
            phrase = rng.choice(phrasings)
            lines.append(phrase.format(a=value[0], b=value[1]) if isinstance(value, tuple) else phrase.format(v=value))
        lines.append(rng.choice(_GOODBYES))
        lines = lines[: user.max_turns]
        if len(lines) == user.max_turns and lines[-1] not in _GOODBYES:
            lines[-1] = rng.choice(_GOODBYES)  # the last turn the budget allows ends the conversation
        return lines


def timeline(user: UserConfig, lines: list[str], rng: random.Random) -> list[Event]:
    """The user's lines as timeline events: turn 1 at a seeded time, turn k after the assistant's (k-1)-th
    answer ends; pauses mid-thought, backchannels and barge-ins drawn at the config's rates."""
    events: list[Event] = []
    speech = {"mode": user.mode, **({"voice": user.voice} if user.voice else {})}
    for turn, line in enumerate(lines):
        start: dict[str, Any] = (
            {"at": round(0.3 + rng.uniform(0.0, 0.6), 3)} if turn == 0 else
            {"after": f"assistant_stops_speaking#{turn}", "delay_ms": round(rng.uniform(250.0, 900.0), 1)}
        )
        parts = line.split(" ", 1)
        if len(parts) == 2 and rng.random() < user.pause_mid_thought:
            events.append(Say(id=f"t{turn}a", text=parts[0], role="partial", **speech, **start))
            events.append(Pause(duration=round(rng.uniform(0.4, 1.2), 3)))
            events.append(Say(text=parts[1], **speech))
        else:
            events.append(Say(id=f"t{turn}", text=line, **speech, **start))
        if turn + 1 < len(lines):  # reactions to the answer this turn asks for
            if rng.random() < user.backchannel:
                events.append(Say(text=rng.choice(_BACKCHANNELS), role="backchannel", transcript=False,
                                  after=f"assistant_starts_speaking#{turn + 1}",
                                  delay_ms=round(rng.uniform(600.0, 1500.0), 1), **speech))
            elif rng.random() < user.barge_in:
                events.append(Interrupt(text=rng.choice(_BARGE_INS), after=f"assistant_starts_speaking#{turn + 1}",
                                        delay_ms=round(rng.uniform(300.0, 1200.0), 1), **speech))
    return events


SIMULATOR_ENV = {key: (f"MICROTURN_SIMULATOR_{key.upper()}", *names) for key, names in REASONER_ENV.items()}
"""Environment variables the LLM simulator reads, first found wins: its own, then the background reasoner's."""

SIMULATOR_PROMPT = (
    "You play the user of a real-time voice assistant in a test. Given a persona and a goal, write what that "
    "user says, one short spoken line per turn (the first states the request, later ones answer the assistant's "
    "likely questions, the last says goodbye). Reply with only a JSON array of strings."
)
MAX_LINE_CHARS = 300


class ChatSimulator:
    """A user whose lines an OpenAI-compatible chat model writes (the background reasoner's client), timed
    like the offline user from the seed. The model is asked once per run, before the session starts, so the
    lockstep clock cannot run while it thinks; its lines go into the timeline, so the recording holds them and
    replay needs no model."""

    def __init__(self, client: OpenAIChatReasoner) -> None:
        self.client = client
        self.name = f"chat:{client.model}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> ChatSimulator | None:
        """The simulator :data:`SIMULATOR_ENV` configures, or None when no URL is set."""
        env = os.environ if env is None else env

        def first(key: str) -> str | None:
            return next((env[v] for v in SIMULATOR_ENV[key] if env.get(v)), None)

        url = first("url")
        if url is None:
            return None
        try:
            client = OpenAIChatReasoner(url, first("model") or "default", first("api_key"),
                                        system_prompt=SIMULATOR_PROMPT, **kwargs)
        except ValueError as exc:
            raise ValueError(f"the simulator's URL (one of {', '.join(SIMULATOR_ENV['url'])}): {exc}") from None
        return cls(client)

    def plan(self, user: UserConfig, seed: int) -> list[Event]:
        """Ask the model for the lines (cut to ``max_turns``), then time them from the seed."""
        rng = random.Random(seed)
        return timeline(user, self.lines(user, seed), rng)

    def lines(self, user: UserConfig, seed: int) -> list[str]:
        """The model's lines; a failure to ask or an answer that is no list of lines is a ScenarioError."""
        messages = [
            {"role": "system", "content": SIMULATOR_PROMPT},
            {"role": "user", "content": f"Persona: {user.persona or 'an ordinary user'}\nGoal: {user.goal}\n"
                                        f"At most {user.max_turns} lines. Variation seed: {seed}."},
        ]
        try:
            answer = _blocking(lambda: self.client.complete(messages))
        except ReasonerError as exc:
            raise ScenarioError(f"the user simulator could not be asked: {exc}", key="user") from None
        text = answer.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
        try:
            lines = msgspec.json.decode(text, type=list[str])
        except msgspec.DecodeError:
            raise ScenarioError("the user simulator's answer is not a JSON list of lines", key="user",
                                value=answer[:MAX_LINE_CHARS]) from None
        lines = [" ".join(line.split())[:MAX_LINE_CHARS] for line in lines if line.strip()][: user.max_turns]
        if not lines:
            raise ScenarioError("the user simulator gave no lines", key="user", value=answer[:MAX_LINE_CHARS])
        return lines


def simulator_from_env(env: Mapping[str, str] | None = None) -> UserSimulator:
    """The LLM simulator when :data:`SIMULATOR_ENV` names a URL, else the offline one."""
    return ChatSimulator.from_env(env) or OfflineSimulator()


def expand(
    raw: dict[str, Any], *, file: str = "<scenario>", base_dir: str | Path | None = None,
    default_name: str = "simulated", simulator: UserSimulator | None = None,
) -> list[Scenario]:
    """The scenarios a parsed simulated-user file stands for: one per run, named ``NAME[seed=S]``, each with
    the simulator's timeline after any written one, and the ``success`` criterion as a judged expectation.
    Raises :class:`ScenarioError` naming a bad ``[user]`` field and its value."""
    raw = dict(raw)
    if "user" not in raw:
        raise ScenarioError("a simulated-user scenario needs a [user] table", file=file, key="user")
    user_raw = raw.pop("user")
    if not isinstance(user_raw, dict):
        raise ScenarioError("must be a table", file=file, key="user", value=user_raw)
    try:
        user = msgspec.convert(user_raw, UserConfig)
    except msgspec.ValidationError as exc:
        found = re.search(r"at `\$\.(\w+)`", str(exc))
        if found is None:  # a missing or unknown field: msgspec names it in the message
            raise ScenarioError(str(exc), file=file, key="user") from None
        field = found.group(1)
        reason = re.sub(r"\s*- at `\$\.\w+`", "", str(exc))
        raise ScenarioError(reason, file=file, key=f"user.{field}", value=user_raw.get(field)) from None
    try:
        base = msgspec.convert(raw, Scenario, str_keys=True)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"bad scenario: {exc}", file=file) from None
    simulator = simulator or OfflineSimulator()
    name = base.name or default_name
    expect = list(base.expect)
    if user.success:
        expect.append(Judged(name="goal reached", criterion=user.success))
    turns = user.max_turns
    out = []
    for k in range(user.runs):
        seed = user.seed + k
        timeline = [*base.timeline, *simulator.plan(user, seed)]
        sc = msgspec.structs.replace(
            base, name=f"{name}[seed={seed}]", timeline=timeline, expect=expect,
            duration=max(base.duration, 6.0 * turns), tags=[*base.tags, "simulated"],
        )
        out.append(validate(sc, base_dir=base_dir, check_types=True))
    return out


def load_simulated(path: str | Path, *, simulator: UserSimulator | None = None) -> list[Scenario]:
    """Read a simulated-user scenario file and expand it (see :func:`expand`)."""
    p = Path(path)
    try:
        data = p.read_bytes()[: MAX_SCENARIO_BYTES + 1]
    except OSError as exc:
        raise ScenarioError(f"cannot read the scenario file: {exc.strerror}", file=p) from None
    if len(data) > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"the file is over {MAX_SCENARIO_BYTES} bytes", file=p)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"cannot parse the scenario file: {exc}", file=p) from None
    return expand(raw, file=str(p), base_dir=p.parent, default_name=p.stem, simulator=simulator)


def simulated_runs(path: str | Path, simulator: UserSimulator | None = None) -> list[Scenario] | None:
    """The runs of ``path`` when it is a simulated-user scenario (it has a ``[user]`` table), else None (an
    ordinary scenario, or one that does not parse: the ordinary loader then reports it). Without a
    ``simulator``, the one the environment configures (:func:`simulator_from_env`)."""
    p = Path(path)
    try:
        data = p.read_bytes()[: MAX_SCENARIO_BYTES + 1]
        raw = tomllib.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if "user" not in raw:
        return None
    return load_simulated(p, simulator=simulator or simulator_from_env())


def record_path(record: str | Path, seed: int, runs: int) -> str:
    """Where run ``seed`` of ``runs`` is recorded when the user asked for ``record``: that file for one run,
    else one file per run beside it (``session.mtr`` -> ``session.seed-3.mtr``)."""
    p = Path(record)
    return str(p) if runs == 1 else str(p.with_name(f"{p.stem}.seed-{seed}{p.suffix}"))


def goal_reached(result: Any) -> bool:
    """The offline goal-reached check: every user event the simulator planned was said, so the conversation
    went turn by turn to the goodbye (an assistant that never answered leaves later turns unfired)."""
    return not result.not_fired


def aggregate(name: str, results: list[Any]) -> dict[str, Any]:
    """Per-run verdicts and the goal success rate of one simulated-user scenario's runs, as plain data."""
    runs = [{"name": r.scenario.name, "verdict": r.verdict, "goal_reached": goal_reached(r)} for r in results]
    reached = sum(run["goal_reached"] for run in runs)
    return {
        "kind": "simulated", "name": name, "runs": runs,
        "goal_success_rate": reached / len(runs) if runs else 0.0,
        "passed": sum(run["verdict"] == "pass" for run in runs),
    }


def format_aggregate(summary: dict[str, Any]) -> str:
    """The aggregate as the ``microturn run`` table prints it."""
    head = (f"simulated user {summary['name']}: {len(summary['runs'])} runs, goal reached in "
            f"{summary['goal_success_rate']:.0%}, {summary['passed']} passed")
    lines = [head]
    lines += [f"  {run['name']}: {run['verdict']}, goal {'reached' if run['goal_reached'] else 'not reached'}"
              for run in summary["runs"]]
    return "\n".join(lines)
