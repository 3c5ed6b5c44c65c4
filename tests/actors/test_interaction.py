"""The interaction actor: unit tests with a model test double, end-to-end sessions with the scripted policy and
the output mixer (all in virtual time), and one realtime test of a step that overruns the tick."""

from __future__ import annotations

import threading

from msgspec.structs import replace

from microturn.actors.clock import ClockActor
from microturn.actors.interaction import InteractionActor, coalesce_chunks
from microturn.actors.output_mixer import OutputMixer
from microturn.messages import (
    BackgroundUpdate,
    Delegate,
    DialogState,
    Heard,
    InputChunk,
    Interrupt,
    Message,
    OutputChunk,
    Playout,
    SpeechEnded,
    SpeechStarted,
    Tick,
    ToolCall,
    ToolResult,
)
from microturn.model.protocol import BlockingModelSession, ModelSpec, StepInput, StepOutput, ToolRequest
from microturn.model.scripted import ScriptedPolicy
from microturn.runtime import Actor, open_session, replay

SPEAK, END = ["speak"], ["speak", "end_utterance"]


# --- test doubles --------------------------------------------------------------------------------------------


class PerceptionDouble(Actor):
    """Test double of perception: on Tick k publishes InputChunk(tick=k) with the scripted text; speech_prob is
    1 on ticks with text or listed in ``speech``."""

    subscriptions = (Tick,)

    def __init__(self, texts: dict[int, str] | None = None, speech: set[int] = frozenset()) -> None:
        super().__init__("perception")
        self.texts, self.speech = texts or {}, set(speech)

    async def handle(self, message: object) -> None:
        if isinstance(message, Tick):
            text = self.texts.get(message.tick, "")
            prob = 1.0 if text or message.tick in self.speech else 0.0
            await self.publish(InputChunk(tick=message.tick, text=text, speech_prob=prob))


class DialogDouble(Actor):
    """Test double of dialog_state: after InputChunk(tick=k) publishes the state scripted for k, if any."""

    subscriptions = (InputChunk,)

    def __init__(self, states: dict[int, str]) -> None:
        super().__init__("dialog_state")
        self.states = states  # tick -> "floor/user/assistant"

    async def handle(self, message: object) -> None:
        if isinstance(message, InputChunk) and message.tick in self.states:
            floor, user, assistant = self.states[message.tick].split("/")
            await self.publish(DialogState(floor=floor, user=user, assistant=assistant))  # type: ignore[arg-type]


class BackgroundDouble(Actor):
    """Test double of the background reasoner: answers each Delegate after ``delay`` seconds of session time."""

    subscriptions = (Delegate,)

    def __init__(self, text: str, delivery: str, delay: float = 0.4) -> None:
        super().__init__("background")
        self.text, self.delivery, self.delay = text, delivery, delay

    async def handle(self, message: object) -> None:
        if isinstance(message, Delegate):
            await self.sleep(self.delay)
            update = BackgroundUpdate(task_id=message.task_id, status="final", text=self.text, delivery=self.delivery)
            await self.publish(update)  # type: ignore[arg-type]


class ModelDouble(BlockingModelSession):
    """Test double of a model session: replays scripted outputs by input tick and records every input."""

    def __init__(self, outputs: dict[int, StepOutput] | None = None, default: list[str] = ("silence",)) -> None:
        self.outputs = outputs or {}
        self.default = StepOutput(controls=list(default))
        self.inputs: list[StepInput] = []

    def step_sync(self, step_input: StepInput) -> StepOutput:
        self.inputs.append(step_input)
        return self.outputs.get(step_input.chunk.tick, self.default)


class BackendDouble:
    """Test double of a model backend: hands out one prepared session."""

    name = "double"

    def __init__(self, session: BlockingModelSession) -> None:
        self.model = session

    async def open_session(self, spec: ModelSpec) -> BlockingModelSession:
        return self.model


def of(log: list[Message], cls: type) -> list:
    return [m for m in log if isinstance(m, cls)]


def bare(messages: list) -> list:
    """Messages without their bus stamps, to compare with what a test scheduled."""
    return [replace(m, stamp=None) for m in messages]


async def run(actors: list[Actor], ticks: int, inputs: list[tuple[float, Message]] = ()) -> list[Message]:
    log: list[Message] = []
    async with open_session([ClockActor(), *actors], taps=[log.append]) as session:
        for at, message in inputs:
            session.schedule(message, at=at)
        await session.run_ticks(ticks)
    return log


# --- unit tests with a model double ---------------------------------------------------------------------------


async def test_steps_every_chunk_and_ends_an_utterance_when_it_was_heard(autojump_clock) -> None:
    model = ModelDouble({2: StepOutput(text="hi there", controls=SPEAK), 3: StepOutput(text="friend", controls=END)})
    heard = Heard(utterance_id=1, text_heard="hi there friend", truncated=False)
    log = await run([PerceptionDouble(), InteractionActor(BackendDouble(model))], 10, [(1.5, heard)])
    assert [c.tick for c in of(log, OutputChunk)] == list(range(1, 11))
    started, first = of(log, SpeechStarted)[0], of(log, OutputChunk)[2]
    assert (started.utterance_id, started.generation) == (1, 1) and started.stamp.seq < first.stamp.seq
    assert (first.tick, first.generation, first.text) == (3, 1, "hi there")
    (ended,) = of(log, SpeechEnded)
    assert (ended.utterance_id, ended.generation, ended.reason, ended.stamp.time) == (1, 1, "completed", 1.5)
    assert [i.speaking for i in model.inputs] == [False] * 3 + [True] * 4 + [False] * 3
    assert [len(i.heard) for i in model.inputs] == [0] * 7 + [1, 0, 0]


async def test_hands_every_input_stream_to_the_model_once(autojump_clock) -> None:
    model = ModelDouble()
    dialog = DialogState(floor="user", user="speaking", assistant="silent")
    update = BackgroundUpdate(task_id="t", status="progress", text="half way")
    result = ToolResult(call_id="c-1", ok=True, value=3)
    await run(
        [PerceptionDouble({1: "hello"}), InteractionActor(BackendDouble(model))],
        4,
        [(0.3, dialog), (0.3, update), (0.5, result)],
    )
    (a, b, c, d) = model.inputs
    assert (a.chunk.text, a.dialog, b.chunk.text) == ("", None, "hello")
    assert bare([b.dialog]) == [dialog] and bare(b.background) == [update] and b.tool_results == []
    assert c.background == [] and bare(c.tool_results) == [result] and d.tool_results == []
    assert bare([d.dialog]) == [dialog]


async def test_a_user_barge_in_interrupts_at_once_and_starts_a_new_generation(autojump_clock) -> None:
    outputs = {1: StepOutput(text="a long story", controls=SPEAK), 5: StepOutput(text="yes?", controls=END)}
    model = ModelDouble(outputs, default=SPEAK)  # "still speaking" between words
    barge = DialogState(floor="user", user="interrupting", assistant="speaking")
    cut = Heard(utterance_id=1, text_heard="a long", truncated=True)
    log = await run([PerceptionDouble(), InteractionActor(BackendDouble(model))], 8, [(0.7, barge), (0.9, cut)])
    (interrupt,) = of(log, Interrupt)
    (ended,) = of(log, SpeechEnded)  # the truncated Heard that follows ends nothing twice
    assert (interrupt.generation, interrupt.reason, interrupt.stamp.time) == (1, "user_interrupting", 0.7)
    assert (ended.utterance_id, ended.reason, ended.stamp.seq) == (1, "interrupted", interrupt.stamp.seq + 1)
    assert [c.generation for c in of(log, OutputChunk)] == [0, 1, 1, 2, 2, 3, 3, 3]
    assert of(log, SpeechStarted)[-1].generation == 3
    assert model.inputs[4].heard == [of(log, Heard)[0]]


async def test_a_backchannel_is_not_cut_by_the_user(autojump_clock) -> None:
    model = ModelDouble({1: StepOutput(text="mm-hm", controls=["backchannel", "end_utterance"])})
    barge = DialogState(floor="user", user="interrupting", assistant="backchanneling")
    log = await run([PerceptionDouble(), InteractionActor(BackendDouble(model))], 4, [(0.5, barge)])
    assert of(log, Interrupt) == [] and of(log, SpeechEnded) == []


async def test_an_external_interrupt_ends_the_utterance_without_echoing_it(autojump_clock) -> None:
    model = ModelDouble({1: StepOutput(text="hello", controls=SPEAK), 4: StepOutput(text="again", controls=END)})
    log = await run(
        [PerceptionDouble(), InteractionActor(BackendDouble(model))],
        6,
        [(0.5, Interrupt(generation=5, reason="stop_button"))],
    )
    assert [i.stamp.source for i in of(log, Interrupt)] == ["scenario"]
    assert [(e.utterance_id, e.reason) for e in of(log, SpeechEnded)] == [(1, "interrupted")]
    assert of(log, SpeechStarted)[-1].generation == 7  # past the interrupted generation 5


async def test_a_model_that_goes_silent_mid_utterance_is_cut(autojump_clock) -> None:
    model = ModelDouble({1: StepOutput(text="one", controls=SPEAK), 2: StepOutput(controls=["speak"])})
    log = await run([PerceptionDouble(), InteractionActor(BackendDouble(model))], 5)
    assert [(i.generation, i.reason) for i in of(log, Interrupt)] == [(1, "model_stopped")]
    assert [e.reason for e in of(log, SpeechEnded)] == ["interrupted"]


async def test_an_interrupt_delivery_cuts_the_current_utterance(autojump_clock) -> None:
    model = ModelDouble({1: StepOutput(text="well", controls=SPEAK)})
    urgent = BackgroundUpdate(task_id="t", status="final", text="Now!", delivery="interrupt")
    log = await run([PerceptionDouble(), InteractionActor(BackendDouble(model))], 4, [(0.5, urgent)])
    assert [i.reason for i in of(log, Interrupt)] == ["background_interrupt"]
    assert bare(model.inputs[2].background) == [urgent]


async def test_forwards_delegations_and_tool_calls_with_deterministic_ids(autojump_clock) -> None:
    model = ModelDouble(
        {
            2: StepOutput(
                text="Let me see.",
                controls=["speak", "delegate", "tool_call", "end_utterance"],
                delegate="find x",
                tool_call=ToolRequest(name="weather", args={"city": "Oslo"}),
            ),
            4: StepOutput(delegate="find y", controls=["delegate"]),
        }
    )
    actor = InteractionActor(BackendDouble(model), tools=["weather"])
    log = await run([PerceptionDouble({1: "what is x"}), DialogDouble({1: "user/inviting/silent"}), actor], 6)
    first, second = of(log, Delegate)
    (call,) = of(log, ToolCall)
    assert (first.task_id, first.goal, first.generation, second.task_id) == ("task-1", "find x", 1, "task-2")
    assert (call.call_id, call.name, call.args, call.generation) == ("weather-1", "weather", {"city": "Oslo"}, 1)
    assert [(t.speaker, t.text) for t in first.context.transcript] == [("user", "what is x")]
    assert first.context.tools == ["weather"] and "user=inviting" in first.context.dialog_state


def test_coalescing_merges_texts_and_media_and_keeps_the_latest_speech() -> None:
    a = InputChunk(tick=3, text="hello", dmel=b"ab", n_frames=1, speech_prob=0.9)
    b = InputChunk(tick=4, dmel=b"cd", n_frames=1, speech_prob=0.8, patches=b"p", n_patches=1, image_grids=[(1, 1)])
    c = InputChunk(tick=5, text="there", speech_prob=0.1)
    assert coalesce_chunks([a]) is a
    assert coalesce_chunks([a, b, c]) == InputChunk(
        tick=5,
        text="hello there",
        dmel=b"abcd",
        n_frames=2,
        patches=b"p",
        n_patches=1,
        image_grids=[(1, 1)],
        speech_prob=0.1,
    )


def test_the_default_backend_is_the_scripted_policy() -> None:
    assert isinstance(InteractionActor().backend, ScriptedPolicy)


# --- end-to-end: scripted policy + output mixer ---------------------------------------------------------------


def conversation(texts: dict[int, str], states: dict[int, str], *extra: Actor, speech: set[int] = frozenset()):
    return [PerceptionDouble(texts, speech), DialogDouble(states), InteractionActor(), OutputMixer(), *extra]


def said(log: list[Message], utterance_id: int) -> str:
    return " ".join(p.text for p in of(log, Playout) if p.utterance_id == utterance_id and p.text)


async def test_a_smooth_turn(autojump_clock) -> None:
    states = {1: "user/speaking/silent", 3: "user/yielding/silent"}
    log = await run(conversation({1: "hello", 2: "there"}, states), 30)
    yielded = next(d for d in of(log, DialogState) if d.user == "yielding")
    first = next(p for p in of(log, Playout) if p.text)
    assert first.tick - yielded.stamp.tick <= 1  # the answer's first word plays in the very next window
    (heard,) = of(log, Heard)
    assert heard.truncated is False and heard.text_heard == said(log, 1)
    assert heard.text_heard in ("Hello! How can I help you today?", "Hi there! What can I do for you?")
    assert [(e.utterance_id, e.reason) for e in of(log, SpeechEnded)] == [(1, "completed")]


async def test_a_thinking_pause_is_not_taken_over(autojump_clock) -> None:
    texts = {1: "so I was wondering", 11: "about the weekend"}
    states = {
        1: "user/speaking/silent",
        2: "user/thinking/silent",
        11: "user/speaking/silent",
        12: "user/yielding/silent",
    }
    log = await run(conversation(texts, states, speech={1, 11}), 40)
    yielded = next(d for d in of(log, DialogState) if d.user == "yielding")
    assert all(p.stamp.time > yielded.stamp.time for p in of(log, Playout))
    assert of(log, SpeechStarted)[0].stamp.tick == yielded.stamp.tick  # and it answers in that very tick
    assert said(log, 1).endswith("You said so I was wondering about the weekend.")


async def test_a_user_backchannel_does_not_stop_the_assistant(autojump_clock) -> None:
    states = {
        1: "user/inviting/silent",
        3: "assistant/yielding/speaking",
        8: "assistant/speaking/speaking",
        9: "assistant/pausing/speaking",
    }
    log = await run(conversation({1: "hello there", 8: "mm-hm"}, states), 40)
    assert of(log, Interrupt) == []
    assert [(h.utterance_id, h.truncated) for h in of(log, Heard)] == [(1, False)]
    assert [e.reason for e in of(log, SpeechEnded)] == ["completed"] and len(of(log, SpeechStarted)) == 1


async def test_a_barge_in_stops_playout_within_one_tick(autojump_clock) -> None:
    states = {1: "user/inviting/silent", 8: "user/interrupting/speaking", 10: "user/yielding/silent"}
    log = await run(conversation({1: "hello there", 8: "wait a moment"}, states), 30)
    barge = next(d for d in of(log, DialogState) if d.user == "interrupting")
    (interrupt,) = of(log, Interrupt)
    assert interrupt.stamp.time == barge.stamp.time  # cut in the same instant the barge-in is known
    old = [p for p in of(log, Playout) if p.utterance_id == 1]
    assert max(p.tick for p in old) < barge.stamp.tick  # window in which it became known: already silent
    heard = next(h for h in of(log, Heard) if h.utterance_id == 1)
    greeting = ("Hello! How can I help you today?", "Hi there! What can I do for you?")
    assert heard.truncated and heard.text_heard == said(log, 1) and len(heard.text_heard.split()) == 3
    assert any(g.startswith(heard.text_heard + " ") for g in greeting)
    assert [(e.utterance_id, e.reason) for e in of(log, SpeechEnded)] == [(1, "interrupted"), (2, "completed")]
    assert said(log, 2).endswith("You said wait a moment.")  # then it listened and answered the interruption


async def test_a_background_result_is_delivered_when_idle(autojump_clock) -> None:
    states = {1: "user/inviting/silent"}
    background = BackgroundDouble("The capital of France is Paris.", "when_idle")
    log = await run(conversation({1: "what is the capital of France?"}, states, background), 40)
    (delegate,) = of(log, Delegate)
    assert delegate.goal == "what is the capital of France?"
    update = of(log, BackgroundUpdate)[0]
    first_done = of(log, SpeechEnded)[0]
    assert update.stamp.time < first_done.stamp.time  # it arrived while the holding phrase was playing...
    assert of(log, SpeechStarted)[1].stamp.time >= first_done.stamp.time  # ...and waited until it finished
    assert [(h.text_heard, h.truncated) for h in of(log, Heard)] == [
        ("Let me look that up.", False),
        ("The capital of France is Paris.", False),
    ]


async def test_a_background_result_delivered_as_an_interruption_cuts_in(autojump_clock) -> None:
    urgent = BackgroundUpdate(task_id="timer", status="final", text="Your timer is done.", delivery="interrupt")
    log = await run(conversation({1: "hello there"}, {1: "user/inviting/silent"}), 30, [(1.5, urgent)])
    (interrupt,) = of(log, Interrupt)
    assert (interrupt.reason, interrupt.stamp.time) == ("background_interrupt", 1.5)
    assert max(p.tick for p in of(log, Playout) if p.utterance_id == 1) < interrupt.stamp.tick
    h1, h2 = of(log, Heard)
    assert h1.truncated and h1.text_heard == said(log, 1)
    assert (h2.text_heard, h2.truncated) == ("Your timer is done.", False)
    assert of(log, SpeechStarted)[1].stamp.tick - interrupt.stamp.tick <= 1


async def test_silent_background_results_are_never_spoken(autojump_clock) -> None:
    quiet = BackgroundUpdate(task_id="t", status="final", text="Logged only.", delivery="silent")
    log = await run(conversation({}, {1: "user/yielding/silent"}), 15, [(0.5, quiet)])
    assert of(log, Playout) == [] and of(log, SpeechStarted) == []


async def test_a_tool_result_is_phrased_and_spoken(autojump_clock) -> None:
    answer = ToolResult(call_id="session_time-1", ok=True, value=1.6)
    log = await run(conversation({1: "what time is it"}, {1: "user/inviting/silent"}), 40, [(1.0, answer)])
    assert [c.call_id for c in of(log, ToolCall)] == ["session_time-1"]
    assert [h.text_heard for h in of(log, Heard)] == [
        "Let me check the time.",
        "It is 1.6 seconds into our conversation.",
    ]


def barge_in_session() -> list[Actor]:
    """A session with a question, a delegation answered in the background, and a barge-in."""
    texts = {1: "what is the capital of France?", 20: "wait, no, something else"}
    states = {1: "user/inviting/silent", 20: "user/interrupting/speaking", 22: "user/yielding/silent"}
    return conversation(texts, states, BackgroundDouble("Paris, of course.", "when_idle"))


async def test_a_recorded_session_replays_bit_for_bit(autojump_clock, tmp_path) -> None:
    path = tmp_path / "session.mtrec"
    async with open_session([ClockActor(), *barge_in_session()], record=path) as session:
        await session.run_ticks(60)
    result = await replay(path, factory=lambda: [ClockActor(), *barge_in_session()])
    assert result.ok, result.divergence
    assert result.compared > 200


# --- realtime: a step that overruns the tick does not block the loop ---------------------------------------


class GatedModelDouble(BlockingModelSession):
    """Test double of a slow model: its first step blocks until the test opens the gate; it records every
    input and how many steps ever ran at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.inputs: list[StepInput] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def step_sync(self, step_input: StepInput) -> StepOutput:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.inputs.append(step_input)
        try:
            if len(self.inputs) == 1:
                self.gate.wait(timeout=30)  # a bound, so a broken test fails instead of hanging
            return StepOutput(controls=["silence"])
        finally:
            with self.lock:
                self.in_flight -= 1


async def test_realtime_steps_run_off_the_loop_and_coalesce_inputs() -> None:
    model = GatedModelDouble()
    actor = InteractionActor(BackendDouble(model))
    log: list[Message] = []
    texts = {k: f"w{k}" for k in range(1000)}
    async with open_session(
        [ClockActor(), PerceptionDouble(texts), actor], mode="realtime", tick_period=0.02, taps=[log.append]
    ) as session:
        try:
            await session.wait_tick(10)  # ticks keep coming while the first step is blocked
            assert actor.stepping and len(model.inputs) <= 1 and of(log, OutputChunk) == []
        finally:
            model.gate.set()
        await session.wait_tick(session.last_tick + 5)
    first, second = model.inputs[:2]
    assert first.chunk.tick == 0
    assert second.chunk.tick >= 5  # (about 10: whatever had queued by the time the gate opened)
    assert second.chunk.text == " ".join(f"w{k}" for k in range(1, second.chunk.tick + 1))
    assert model.max_in_flight == 1 and actor.coalesced >= second.chunk.tick - 1
    assert of(log, OutputChunk)[0].tick == 1 and of(log, OutputChunk)[1].tick == second.chunk.tick + 1
    ticks_during_block = [t for t in of(log, Tick) if t.stamp.seq < of(log, OutputChunk)[0].stamp.seq]
    assert len(ticks_during_block) >= 11


async def test_reference_words_render_what_the_model_was_fed_and_never_more(autojump_clock) -> None:
    model = ModelDouble(
        {
            3: StepOutput(text="That makes \x01T.", controls=["speak", "end_utterance"]),
            6: StepOutput(text="\x01B", controls=["speak", "end_utterance"]),
            9: StepOutput(text="It was \x01T7.", controls=["speak", "end_utterance"]),  # never fed: says nothing
        }
    )
    actor = InteractionActor(BackendDouble(model))
    inputs = [
        (0.3, ToolResult(call_id="calculate-1", ok=True, value=84)),
        (0.9, BackgroundUpdate(task_id="task-1", status="final", text="Paris is the capital.", delivery="when_idle")),
    ]
    log = await run([PerceptionDouble(), actor], 12, inputs)
    assert [o.text for o in of(log, OutputChunk) if o.text] == ["That makes 84.", "Paris is the capital.", "It was ."]
    assert sum(len(i.tool_results) for i in model.inputs) == 1  # the result reached the model once
    assert actor.references.unresolved == 1


async def test_a_goal_by_reference_delegates_the_users_words_and_an_unresolved_one_nothing(autojump_clock) -> None:
    model = ModelDouble(
        {
            2: StepOutput(controls=["delegate"], delegate="\x01L6"),
            3: StepOutput(controls=["delegate"], delegate="\x01U40-41"),  # never fed: not guessed
        }
    )
    actor = InteractionActor(BackendDouble(model))
    log = await run([PerceptionDouble({0: "what is the capital", 1: "of France?"}), actor], 5)
    assert [d.goal for d in of(log, Delegate)] == ["what is the capital of France?"]
    assert actor.references.unresolved == 1
