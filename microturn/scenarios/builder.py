"""The Python API for scenarios: builds the same :class:`~microturn.scenarios.format.Scenario` Structs a TOML
file decodes to, checked by the same validation.

Example::

    from microturn.scenarios import ScenarioBuilder, run_scenario

    scenario = (
        ScenarioBuilder("barge-in-early", category="barge_in", duration=9.0)
        .speech("speech")
        .say("hello, how are you doing today?", at=0.4)
        .interrupt("wait, wait, stop please", after="assistant_starts_speaking", delay_ms=400)
        .expect_stops_within(1000, after="user:barge_in")
        .build()
    )
    result = run_scenario(scenario)
    assert result.ok, result.failures

Each timeline method takes the trigger keywords ``at`` (seconds), or ``after`` (a reference) with ``delay_ms``
or ``delay_ticks`` and ``nth``; with neither, the event follows the previous one. ``id`` names it for
``event:ID`` references.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypedDict, Unpack

from .format import (
    STANDIN_BACKGROUND_TEXT,
    BackgroundBehaviour,
    Cough,
    DoesNotSay,
    HeardWithin,
    Image,
    Interrupt,
    KeepsSpeaking,
    MarkEvent,
    ModelConfig,
    Noise,
    NoToolCalled,
    Pause,
    Play,
    RespondsWithin,
    Say,
    Says,
    Scenario,
    SilentBetween,
    Silence,
    SpeechConfig,
    StopsWithin,
    ToolBehaviour,
    ToolCalled,
    WorldConfig,
    validate,
)

__all__ = ["ScenarioBuilder"]


class When(TypedDict, total=False):
    """When a timeline event starts (every timeline method takes these keywords; see ``format.py``): at an
    absolute session time ``at``, or ``delay_ms`` / ``delay_ticks`` after the ``nth`` occurrence of ``after``;
    ``id`` names the event for ``event:ID`` references."""

    at: float | None
    after: str | None
    delay_ms: float | None
    delay_ticks: int | None
    nth: int
    id: str | None


class ScenarioBuilder:
    """Builds a scenario step by step; every method returns the builder, :meth:`build` returns the checked
    :class:`Scenario`. Relative paths (``play``, ``image``) resolve against ``base_dir`` (default: the
    current directory)."""

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        category: str = "uncategorized",
        tags: Iterable[str] = (),
        duration: float = 10.0,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._fields: dict[str, Any] = {
            "name": name,
            "description": description,
            "category": category,
            "tags": list(tags),
            "duration": duration,
        }
        self._base_dir = base_dir
        self._model = ModelConfig()
        self._speech = SpeechConfig()
        self._world = WorldConfig()
        self._dialog: dict[str, float] = {}
        self._timeline: list[Any] = []
        self._tools: list[ToolBehaviour] = []
        self._background: list[BackgroundBehaviour] = []
        self._expect: list[Any] = []

    # --- configuration ----------------------------------------------------------------------------------------

    def model(
        self, name: str = "scripted", *, options: dict[str, Any] | None = None, outputs_per_tick: int = 8, seed: int = 0
    ) -> ScenarioBuilder:
        """The interaction backend and its options (``[model]``)."""
        self._model = ModelConfig(name=name, options=dict(options or {}), outputs_per_tick=outputs_per_tick, seed=seed)
        return self

    def speech(self, mode: str = "text", *, wpm: int | None = None, voice: str = "en-us") -> ScenarioBuilder:
        """How ``say`` events are delivered by default (``[speech]``): ``"text"`` or ``"speech"``."""
        self._speech = SpeechConfig(mode=mode, wpm=wpm, voice=voice)  # type: ignore[arg-type]
        return self

    def world(self, *, tools: str = "scripted", background: str = "scripted") -> ScenarioBuilder:
        """What answers tool calls and delegated tasks (``[world]``): ``tools="builtin"`` for the real tool
        runner with the built-in tools, ``background="offline"`` for the offline planner."""
        self._world = WorldConfig(tools=tools, background=background)  # type: ignore[arg-type]
        return self

    def dialog(self, **seconds: float) -> ScenarioBuilder:
        """Dialog-state timings in seconds (``[dialog]``), e.g. ``barge_in=0.4``."""
        self._dialog.update(seconds)
        return self

    # --- the timeline ---------------------------------------------------------------------------------------

    def add(self, event: Any) -> ScenarioBuilder:
        """Append any timeline event Struct."""
        self._timeline.append(event)
        return self

    def say(
        self,
        text: str,
        *,
        role: str = "turn",
        mode: str | None = None,
        wpm: int | None = None,
        voice: str | None = None,
        transcript: bool = True,
        **when: Unpack[When],
    ) -> ScenarioBuilder:
        """The user says ``text`` (see :class:`~microturn.scenarios.format.Say`)."""
        return self.add(
            Say(text=text, role=role, mode=mode, wpm=wpm, voice=voice, transcript=transcript,  # type: ignore[arg-type]
                **when)
        )

    def interrupt(
        self,
        text: str = "wait, stop, stop please",
        *,
        mode: str | None = None,
        wpm: int | None = None,
        voice: str | None = None,
        transcript: bool = True,
        **when: Unpack[When],
    ) -> ScenarioBuilder:
        """The user talks over the assistant (a ``say`` with role ``barge_in``)."""
        return self.add(
            Interrupt(text=text, mode=mode, wpm=wpm, voice=voice, transcript=transcript,  # type: ignore[arg-type]
                      **when)
        )

    def play(
        self,
        path: str,
        *,
        transcript: str | None = None,
        role: str = "none",
        **when: Unpack[When],
    ) -> ScenarioBuilder:
        """Play a PCM16 WAV file."""
        return self.add(
            Play(path=os.fspath(path), transcript=transcript, role=role,  # type: ignore[arg-type]
                 **when)
        )

    def image(
        self,
        path: str | None = None,
        *,
        pattern: str = "checker",
        width: int = 80,
        height: int = 80,
        color: tuple[int, int, int] = (128, 128, 128),
        **when: Unpack[When],
    ) -> ScenarioBuilder:
        """Show an image file, or a generated test image (``color`` fills a ``solid`` one)."""
        return self.add(
            Image(path=os.fspath(path) if path is not None else None, pattern=pattern, width=width,  # type: ignore[arg-type]
                  height=height, color=tuple(color), **when)
        )

    def silence(
        self,
        duration: float,
        **when: Unpack[When],
    ) -> ScenarioBuilder:
        """The user stays silent for ``duration`` seconds."""
        return self.add(Silence(duration=duration, **when))

    def pause(
        self,
        duration: float,
        **when: Unpack[When],
    ) -> ScenarioBuilder:
        """A pause inside the user's turn (marks ``user:pause`` and ``user:pause_end``)."""
        return self.add(Pause(duration=duration, **when))

    def noise(
        self,
        duration: float = 0.3,
        *,
        level: float = 0.1,
        seed: int = 0,
        role: str = "noise",
        **when: Unpack[When],
    ) -> ScenarioBuilder:
        """A burst of white noise (marks ``user:noise``)."""
        return self.add(Noise(duration=duration, level=level, seed=seed, role=role, **when))  # type: ignore[arg-type]

    def cough(
        self,
        duration: float = 0.25,
        *,
        level: float = 0.3,
        seed: int = 0,
        role: str = "noise",
        **when: Unpack[When],
    ) -> ScenarioBuilder:
        """A cough (marks ``user:noise``)."""
        return self.add(Cough(duration=duration, level=level, seed=seed, role=role, **when))  # type: ignore[arg-type]

    def mark(
        self,
        name: str,
        **when: Unpack[When],
    ) -> ScenarioBuilder:
        """Publish the mark ``mark:NAME``."""
        return self.add(MarkEvent(name=name, **when))

    # --- the scripted world -----------------------------------------------------------------------------------

    def tool(
        self, name: str, *, latency_ms: float = 50.0, result: Any = None, error: str | None = None
    ) -> ScenarioBuilder:
        """How the scripted tool runner answers ``name`` (``[[tools]]``)."""
        self._tools.append(ToolBehaviour(name=name, latency_ms=latency_ms, result=result, error=error))
        return self

    def background(
        self,
        *,
        goal: str | None = None,
        latency_ms: float = 1000.0,
        result: str = STANDIN_BACKGROUND_TEXT,
        error: str | None = None,
        delivery: str = "when_idle",
        progress: Iterable[str] = (),
        started: bool = False,
    ) -> ScenarioBuilder:
        """How the scripted background reasoner answers delegated goals matching ``goal`` (``[[background]]``)."""
        self._background.append(
            BackgroundBehaviour(goal=goal, latency_ms=latency_ms, result=result, error=error,
                                delivery=delivery, progress=list(progress), started=started)  # type: ignore[arg-type]
        )
        return self

    # --- expectations -----------------------------------------------------------------------------------------

    def expect(self, expectation: Any) -> ScenarioBuilder:
        """Append any expectation Struct."""
        self._expect.append(expectation)
        return self

    def expect_responds_within(
        self,
        budget_ms: float | None = None,
        *,
        after: str | float = "user:turn_end",
        nth: int = 1,
        budget_ticks: int | None = None,
        name: str | None = None,
    ) -> ScenarioBuilder:
        """The assistant starts speaking within the budget after ``after``."""
        return self.expect(RespondsWithin(after=after, nth=nth, budget_ms=budget_ms, budget_ticks=budget_ticks,
                                          name=name))

    def expect_silent_between(
        self, start: str | float, end: str | float, *, backchannels: bool = True, name: str | None = None
    ) -> ScenarioBuilder:
        """No assistant word is heard between ``start`` and ``end``."""
        return self.expect(SilentBetween(start=start, end=end, backchannels=backchannels, name=name))

    def expect_stops_within(
        self,
        budget_ms: float | None = None,
        *,
        after: str | float = "user:barge_in",
        nth: int = 1,
        budget_ticks: int | None = None,
        name: str | None = None,
    ) -> ScenarioBuilder:
        """The utterance playing at ``after`` stops within the budget."""
        return self.expect(StopsWithin(after=after, nth=nth, budget_ms=budget_ms, budget_ticks=budget_ticks,
                                       name=name))

    def expect_keeps_speaking(
        self, *, after: str | float = "user:backchannel", nth: int = 1, name: str | None = None
    ) -> ScenarioBuilder:
        """The utterance playing at ``after`` completes."""
        return self.expect(KeepsSpeaking(after=after, nth=nth, name=name))

    def expect_heard_within(
        self,
        budget_ms: float | None = None,
        *,
        after: str | float = "background_result",
        nth: int = 1,
        budget_ticks: int | None = None,
        name: str | None = None,
    ) -> ScenarioBuilder:
        """The background result is heard within the budget of its arrival."""
        return self.expect(HeardWithin(after=after, nth=nth, budget_ms=budget_ms, budget_ticks=budget_ticks,
                                       name=name))

    def expect_says(
        self, pattern: str, *, start: str | float | None = None, end: str | float | None = None,
        name: str | None = None,
    ) -> ScenarioBuilder:
        """Some utterance, as heard (first heard in [start, end) when given), matches ``pattern``."""
        return self.expect(Says(pattern=pattern, start=start, end=end, name=name))

    def expect_does_not_say(
        self, pattern: str, *, start: str | float | None = None, end: str | float | None = None,
        name: str | None = None,
    ) -> ScenarioBuilder:
        """No utterance, as heard (first heard in [start, end) when given), matches ``pattern``."""
        return self.expect(DoesNotSay(pattern=pattern, start=start, end=end, name=name))

    def expect_tool_called(self, tool: str | None = None, *, name: str | None = None) -> ScenarioBuilder:
        """The assistant called ``tool`` (or any tool)."""
        return self.expect(ToolCalled(tool=tool, name=name))

    def expect_no_tool_called(self, tool: str | None = None, *, name: str | None = None) -> ScenarioBuilder:
        """The assistant called no tool (or not ``tool``)."""
        return self.expect(NoToolCalled(tool=tool, name=name))

    # --- the result -----------------------------------------------------------------------------------------

    def build(self) -> Scenario:
        """The scenario, checked exactly like a loaded file (types, ranges, references, files); raises
        :class:`~microturn.scenarios.format.ScenarioError` naming the key and value."""
        scenario = Scenario(
            **self._fields,
            model=self._model,
            speech=self._speech,
            world=self._world,
            dialog=dict(self._dialog),
            timeline=list(self._timeline),
            tools=list(self._tools),
            background=list(self._background),
            expect=list(self._expect),
        )
        return validate(scenario, base_dir=self._base_dir, check_types=True)
