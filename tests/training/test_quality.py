"""Closed-loop quality: held-out dialogs with a model in the loop, pooled scenario metrics, and a shadow oracle
that labels the model's own trajectory."""

from __future__ import annotations

from microturn.messages import DialogState, InputChunk
from microturn.model.protocol import ModelSpec, StepInput, StepOutput
from microturn.training.dialogs import dialog_seed, generate_dialogs
from microturn.training.quality import (
    HELDOUT_KINDS,
    ShadowOracleBackend,
    format_quality,
    measure_heldout_kinds,
    measure_quality,
)


def test_the_oracle_agrees_with_itself_and_its_figures_come_from_its_events() -> None:
    q = measure_quality("scripted", seed=5, dialogs=3, categories=["greeting", "question", "pause_silent"],
                        text_fraction=1.0)
    assert q.dialogs == 3 and q.ticks > 100
    assert q.control_agreement == 1.0  # the shadow is the very policy that acts
    assert q.turn_ends > 0 and q.response_latency_s is not None and 0 <= q.response_latency_s < 1.0
    assert q.pauses > 0 and q.takeover_pause == 0.0  # the oracle never takes a thinking pause over
    table = format_quality([q])
    assert "median response latency" in table and "100.0 %" in table and "≤ 0.40" in table


def test_both_heldout_kinds_are_measured_each_with_its_phrasings() -> None:
    kinds = measure_heldout_kinds("scripted", seed=2, dialogs=2, categories=["arithmetic", "decline"],
                                  text_fraction=1.0)
    assert set(kinds) == set(HELDOUT_KINDS) == {"heldout_dialogs", "heldout_phrasings"}
    assert kinds["heldout_dialogs"].figures()["phrasings"] == "train"
    assert kinds["heldout_phrasings"].figures()["phrasings"] == "heldout"
    assert all(q.dialogs == 2 and q.control_agreement == 1.0 for q in kinds.values())


class SilentModel:
    """A test double model that never speaks."""

    name = "silent"

    async def open_session(self, spec: ModelSpec) -> SilentModel:
        return self

    blocking = True

    def step_sync(self, step_input: StepInput) -> StepOutput:
        return StepOutput(controls=["silence"])

    async def step(self, step_input: StepInput) -> StepOutput:
        return self.step_sync(step_input)

    async def close(self) -> None:
        pass


async def test_the_shadow_counts_disagreement_on_the_models_own_trajectory() -> None:
    shadow = ShadowOracleBackend(SilentModel())
    session = await shadow.open_session(ModelSpec())
    (dialog,) = generate_dialogs(5, 1, heldout=True, categories=["greeting"], text_fraction=1.0)
    idle = DialogState(floor="none", user="yielding", assistant="silent")
    for tick in range(5):
        out = session.step_sync(StepInput(chunk=InputChunk(tick=tick, text="hello" if tick == 0 else ""), dialog=idle))
        assert out.controls == ["silence"]  # the model's output is what goes out
    assert shadow.tally.ticks == 5 and 0 < shadow.tally.agree < 5  # the oracle would have greeted back
    await session.close()
    assert dialog.scenario.model.name == "scripted"


def test_held_out_dialog_seeds_are_disjoint_from_training_seeds() -> None:
    train = {dialog_seed(3, i) for i in range(2000)}
    held = {dialog_seed(3, i, heldout=True) for i in range(200)}
    assert not train & held


def test_the_oracle_says_every_result_verbatim_and_invents_nothing_on_held_out_dialogs() -> None:
    # A smaller seeded count than the benchmark's >= 500, over the categories that carry facts.
    q = measure_quality("scripted", seed=7, dialogs=10, categories=["time", "arithmetic", "question", "reminder"],
                        text_fraction=1.0)
    assert q.results >= 10 and q.content_exact == 1.0
    assert q.invented_facts == 0, q.extra
    assert "spoken verbatim" in format_quality([q])


def test_content_tally_counts_a_wrong_number_and_an_unsaid_result() -> None:
    from microturn.messages import Delegate, OutputChunk, ToolCall, ToolResult
    from microturn.training.quality import content_tally

    messages = [
        InputChunk(tick=0, text="what is 23 plus 19"),
        ToolCall(call_id="calculate-1", name="calculate", args={"expression": "23 + 19"}),
        ToolResult(call_id="calculate-1", ok=True, value=42),
        OutputChunk(tick=3, generation=1, text="That makes 111."),  # the byte model's kind of slip
        Delegate(task_id="task-1", goal="what is the population of Canada", generation=1),
    ]
    tally = content_tally(messages)
    assert (tally.results, tally.verbatim, tally.invented) == (1, 0, 2)
    right = content_tally([*messages[:3], OutputChunk(tick=3, generation=1, text="That makes 42.")])
    assert (right.results, right.verbatim, right.invented) == (1, 1, 0)
