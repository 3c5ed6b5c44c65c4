"""The scripted policy, stepped directly (no runtime): each rule, pacing, determinism."""

from __future__ import annotations

import msgspec
import pytest

from microturn.messages import BackgroundUpdate, DialogState, InputChunk, ToolResult
from microturn.model.protocol import ModelBackend, ModelSession, ModelSpec, StepInput, StepOutput
from microturn.model.references import ReferenceBook
from microturn.model.scripted import ScriptedPolicy, ScriptedSession


def state(user: str, floor: str = "user", assistant: str = "silent") -> DialogState:
    return DialogState(floor=floor, user=user, assistant=assistant)  # type: ignore[arg-type]


class Conversation:
    """Steps a scripted session tick by tick, standing in for the interaction actor and a mixer that plays
    every word as soon as it is said (``speaking`` from the first words to ``end_utterance``). Like the actor, it
    renders the oracle's reference words from the results it fed (the raw outputs stay in ``raw``)."""

    def __init__(self, policy: ScriptedPolicy | None = None, spec: ModelSpec | None = None) -> None:
        self.session = ScriptedSession(policy or ScriptedPolicy(), spec or ModelSpec())
        self.tick = 0
        self.dialog: DialogState | None = None
        self.speaking = False
        self.outputs: list[StepOutput] = []
        self.raw: list[StepOutput] = []
        self.book = ReferenceBook()

    def step(
        self,
        text: str = "",
        *,
        speech: float | None = None,
        dialog: DialogState | None = None,
        speaking: bool | None = None,
        **streams: list,
    ) -> StepOutput:
        if dialog is not None:
            self.dialog = dialog
        prob = speech if speech is not None else (1.0 if text else 0.0)
        step_input = StepInput(
            chunk=InputChunk(tick=self.tick, text=text, speech_prob=prob),
            dialog=self.dialog,
            speaking=self.speaking if speaking is None else speaking,
            **streams,
        )
        for update in step_input.background:
            self.book.add_background(update.status, update.text)
        for result in step_input.tool_results:
            self.book.add_tool(result.ok, result.value)
        self.book.add_user(text)
        raw = self.session.step_sync(step_input)
        self.raw.append(raw)
        text_out, missing = self.book.resolve(raw.text)
        goal, missing_goal = self.book.resolve(raw.delegate) if raw.delegate else (raw.delegate, [])
        assert not missing and not missing_goal, f"unresolved references {missing + missing_goal} in {raw}"
        out = msgspec.structs.replace(raw, text=text_out, delegate=goal)
        self.tick += 1
        if out.text:
            self.speaking = True
        if "end_utterance" in out.controls:
            self.speaking = False
        self.outputs.append(out)
        return out

    def run(self, n: int, **kwargs: object) -> str:
        """Step ``n`` silent ticks; return the words said meanwhile."""
        return " ".join(o.text for o in (self.step(**kwargs) for _ in range(n)) if o.text)  # type: ignore[arg-type]


def test_backend_and_session_satisfy_the_protocol() -> None:
    policy = ScriptedPolicy()
    assert isinstance(policy, ModelBackend) and policy.name == "scripted"
    session = ScriptedSession(policy, ModelSpec())
    assert isinstance(session, ModelSession) and session.blocking


async def test_open_session_gives_a_fresh_conversation() -> None:
    session = await ScriptedPolicy().open_session(ModelSpec(seed=3))
    out = await session.step(StepInput(chunk=InputChunk(tick=0)))
    assert out == StepOutput(controls=["silence"])
    await session.close()


def test_answers_after_the_user_yields_word_by_word() -> None:
    c = Conversation()
    c.step("hello there", dialog=state("speaking"))
    assert c.step(dialog=state("pausing")).controls == ["silence"]
    first = c.step(dialog=state("yielding"))
    assert first.text and first.controls == ["speak"]
    reply = " ".join([first.text, c.run(30)])
    assert reply in ("Hello! How can I help you today?", "Hi there! What can I do for you?")
    said = [o for o in c.outputs if o.text]
    assert "end_utterance" in said[-1].controls
    assert all(len(o.text.split()) == 1 for o in said)  # 0.5 words per tick: one word every other tick
    assert [o.controls for o in c.outputs[3:6]] == [["speak"], ["speak"], ["speak"]]  # speak between words too


def test_late_reply_answers_up_to_its_maximum_late_and_is_seeded() -> None:
    def first_word_tick(seed: int) -> int:
        c = Conversation(ScriptedPolicy(late_reply=1.0, late_reply_max=0.6), ModelSpec(seed=seed))
        c.step("hello there", dialog=state("speaking"))
        for _ in range(8):
            if c.step(dialog=state("yielding")).text:
                return c.tick - 2  # ticks waited after the first yielding one
        raise AssertionError("never answered")

    waits = {seed: first_word_tick(seed) for seed in range(12)}
    assert set(waits.values()) <= {1, 2, 3} and len(set(waits.values())) > 1  # always late, by 1 to 3 ticks
    assert waits == {seed: first_word_tick(seed) for seed in range(12)}  # the session's seed decides
    with pytest.raises(ValueError, match="late_reply"):
        ScriptedPolicy(late_reply=1.5)


def test_stays_silent_through_a_thinking_pause() -> None:
    c = Conversation()
    c.step("so I was wondering", dialog=state("speaking"))
    silent = [c.step(dialog=state("thinking")) for _ in range(12)]
    assert all(o.controls == ["silence"] and not o.text for o in silent)
    c.step("about the weekend", dialog=state("speaking"))
    c.step(dialog=state("yielding"))
    assert "You said so I was wondering about the weekend" in " ".join(o.text for o in c.outputs) + c.run(30)


def test_stops_at_once_when_interrupted_and_answers_the_interruption() -> None:
    c = Conversation()
    c.step("hello", dialog=state("inviting"))
    c.run(4)
    said_before = " ".join(o.text for o in c.outputs if o.text)
    cut = c.step("wait", dialog=state("interrupting", assistant="speaking"), speaking=False)
    assert cut.controls == ["silence"] and not cut.text
    c.speaking = False
    assert c.run(6, dialog=state("speaking")) == ""
    answer = c.run(30, dialog=state("yielding"))
    assert answer.endswith("You said wait.")
    full = c.session._compose(["hello"]).words  # the greeting it never finished
    assert said_before != " ".join(full) and " ".join(full) not in answer


def test_holds_its_utterance_while_the_user_makes_a_sound_and_goes_on_after() -> None:
    c = Conversation()
    c.step("hello", dialog=state("inviting"))
    c.run(2)
    overlap = state("speaking", floor="assistant", assistant="speaking")
    held = [c.step(speech=0.9, dialog=overlap) for _ in range(2)]  # a cough: at once, and for as long as it lasts
    assert [o.controls for o in held] == [["pause"], ["pause"]] and not any(o.text for o in held)
    goes_on = c.step(speech=0.1, dialog=state("pausing", floor="assistant", assistant="speaking"))
    assert goes_on.controls[0] == "resume" and "pause" not in goes_on.controls
    said = " ".join(o.text for o in c.outputs if o.text) + " " + c.run(30)
    assert said.split() == c.session._compose(["hello"]).words  # nothing lost to the hold
    assert sum("resume" in o.controls for o in c.outputs) == 1


def test_a_barge_in_after_a_hold_drops_the_utterance_without_resuming() -> None:
    c = Conversation()
    c.step("hello", dialog=state("inviting"))
    c.run(2)
    c.step(speech=0.9, dialog=state("speaking", floor="assistant", assistant="speaking"))
    cut = c.step("stop", speech=0.9, dialog=state("interrupting", assistant="speaking"), speaking=False)
    assert cut.controls == ["silence"]
    c.speaking = False
    assert all("resume" not in o.controls for o in [*c.outputs, *(c.step() for _ in range(3))])


def test_its_own_backchannel_is_never_held() -> None:
    c = Conversation()
    outs = [c.step("blah" if i % 2 else "", speech=1.0, dialog=state("speaking")) for i in range(20)]
    assert any("backchannel" in o.controls for o in outs)
    assert c.step(speech=1.0, speaking=True).controls != ["pause"]


def test_drops_an_utterance_the_output_side_cut() -> None:
    c = Conversation()
    c.step("hello", dialog=state("yielding"))
    c.run(2)
    assert c.step(speaking=False).controls == ["silence"]
    c.speaking = False
    assert c.run(20) == ""


def test_backchannels_in_a_long_user_turn_only() -> None:
    c = Conversation()
    outs = [c.step("blah" if i % 2 else "", speech=1.0, dialog=state("speaking")) for i in range(40)]
    backchannels = [(i, o) for i, o in enumerate(outs) if o.text]
    assert [i for i, _ in backchannels] == [14, 29]  # every 3 s of the user's turn (15 ticks)
    assert all(o.controls == ["backchannel", "end_utterance"] for _, o in backchannels)
    assert all(o.text in ("mm-hm", "uh-huh", "right") for _, o in backchannels)
    short = Conversation()
    assert short.run(10, dialog=state("speaking")) == ""
    thinking = Conversation()
    assert thinking.run(40, dialog=state("thinking")) == ""


def test_delegates_a_question_it_cannot_answer() -> None:
    c = Conversation()
    c.step("what is the capital of France?", dialog=state("speaking"))
    first = c.step(dialog=state("inviting"))
    assert first.delegate == "what is the capital of France?"
    assert c.raw[-1].delegate == "\x01L6"  # said by reference: four payload bytes, not thirty spelled
    assert first.controls == ["speak", "delegate"]
    assert " ".join([first.text, c.run(20)]) == "Let me look that up."


def test_asks_the_session_time_tool_and_speaks_the_result_when_idle() -> None:
    c = Conversation()
    c.step("what time is it", dialog=state("speaking"))
    first = c.step(dialog=state("inviting"))
    assert first.tool_call is not None and first.tool_call.name == "session_time"
    assert "tool_call" in first.controls
    result = ToolResult(call_id="session_time-1", ok=True, value=2.5)
    spoken = " ".join(filter(None, [c.step(tool_results=[result]).text, c.run(40)]))
    assert spoken == "me check the time. It is 2.5 seconds into our conversation."
    failed = Conversation()
    failed.step(tool_results=[ToolResult(call_id="weather-2", ok=False, error="timeout")], dialog=state("yielding"))
    assert failed.outputs[-1].text == "Sorry," and failed.run(20) == "the weather tool failed."


def test_background_when_idle_waits_for_idle_and_interrupt_speaks_now() -> None:
    c = Conversation()
    c.step("hello", dialog=state("yielding"))
    done = BackgroundUpdate(task_id="t1", status="final", text="Paris.", delivery="when_idle")
    c.step(background=[done])
    assert "Paris." not in c.run(8)  # still greeting
    rest = c.run(30)
    assert rest.endswith(("you? Paris.", "today? Paris."))
    busy = Conversation()
    busy.step(background=[done], dialog=state("speaking"))
    assert busy.run(10) == ""  # the user is talking: not idle
    assert busy.run(4, dialog=state("yielding")) == "Paris."
    urgent = Conversation()
    urgent.step("hello", dialog=state("yielding"))
    urgent.run(3)
    alarm = BackgroundUpdate(task_id="t2", status="final", text="Fire alarm now.", delivery="interrupt")
    out = urgent.step(background=[alarm], speaking=False)  # the interaction actor cut the greeting
    # Said by reference: the whole result in the tick it arrives, verbatim, and the utterance closes with it.
    assert out.text == "Fire alarm now." and out.controls == ["speak", "end_utterance"]
    assert urgent.raw[-1].text == "\x01B"


def test_silent_background_and_progress_are_never_spoken() -> None:
    c = Conversation()
    c.step(
        dialog=state("yielding"),
        background=[
            BackgroundUpdate(task_id="t", status="progress", text="half way", delivery="when_idle"),
            BackgroundUpdate(task_id="t", status="final", text="secret", delivery="silent"),
        ],
    )
    assert c.run(20) == ""


def test_backchannel_only_turns_are_not_answered() -> None:
    c = Conversation()
    c.step("mm-hm", dialog=state("speaking", floor="assistant"))
    assert c.run(10, dialog=state("yielding")) == ""


def test_without_dialog_state_answers_after_silence() -> None:
    c = Conversation(ScriptedPolicy(reply_after_silence=0.6))
    c.step("thanks")
    assert [c.step().text for _ in range(2)] == ["", ""]
    assert c.step().text == "You"


@pytest.mark.parametrize(("rate", "cap", "per_step"), [(2.0, 8, [2, 2, 2]), (3.0, 2, [2, 2, 2]), (0.5, 8, [1, 1, 0, 1])])
def test_pacing_follows_words_per_tick_capped_by_outputs_per_tick(rate: float, cap: int, per_step: list) -> None:
    c = Conversation(ScriptedPolicy(words_per_tick=rate), ModelSpec(outputs_per_tick=cap))
    c.step("hello you", dialog=state("speaking"))
    outs = [c.step(dialog=state("yielding")), *[c.step() for _ in range(len(per_step) - 1)]]
    assert [len(o.text.split()) for o in outs] == per_step


def test_is_deterministic_for_a_seed() -> None:
    def transcript(seed: int) -> list[StepOutput]:
        c = Conversation(spec=ModelSpec(seed=seed))
        for text in ("hi", "hello", "hey"):
            c.step(text, dialog=state("yielding"))
            c.run(25)
        return c.outputs

    assert transcript(1) == transcript(1)
    assert any(transcript(s) != transcript(1) for s in range(2, 8))


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="words_per_tick"):
        ScriptedPolicy(words_per_tick=0)
