"""The training loop: the dataset's stream equals what a session appends, windows, a short run lowers the
loss, checkpoints resume bitwise, the held-out metric, the manifest, and the CLI's argument errors."""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from microturn.messages import BackgroundUpdate, DialogState, InputChunk, ToolResult
from microturn.model.config import tiny
from microturn.model.kv_session import KVSession
from microturn.model.layout import DMEL, OutputPacker
from microturn.model.local import load_checkpoint
from microturn.model.protocol import StepInput, StepOutput, ToolRequest
from microturn.model.torch_model import InteractionModel
from microturn.training.cli import register
from microturn.training.corpus import TickExample, build_corpus, load_corpus
from microturn.training.dataset import WindowDataset, encode_dialog, plan_windows
from microturn.training.train import TrainConfig, TrainError, evaluate, state_path, train

TINY_CORPUS = {"text_fraction": 1.0, "turns": (1, 2), "away_fraction": 0.0}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic_dialog(n: int = 14, seed: int = 0) -> list[TickExample]:
    """Ticks with dMel, text, an image, background, tool results, and oracle outputs of every kind."""
    rng = np.random.default_rng(seed)
    outs = [StepOutput(controls=["silence"]), StepOutput(text="Sure, one moment please.", controls=["speak"]),
            StepOutput(controls=["delegate"], delegate="look it up"),
            StepOutput(controls=["tool_call"], tool_call=ToolRequest(name="calc", args={"a": 1})),
            StepOutput(text="done", controls=["speak", "end_utterance"]), StepOutput(controls=["backchannel"])]
    ticks = []
    for t in range(n):
        patches, n_patches, grids = b"", 0, []
        if t == 4:
            patches = rng.integers(0, 256, 2 * 4800, dtype=np.uint8).tobytes()
            n_patches, grids = 2, [(1, 2)]
        chunk = InputChunk(tick=t, dmel=rng.integers(0, 16, 4 * 80, dtype=np.uint8).tobytes(), n_frames=4,
                           text="hello there" if t % 5 == 1 else "", patches=patches, n_patches=n_patches,
                           image_grids=grids, speech_prob=float(rng.random()))
        si = StepInput(chunk=chunk, dialog=DialogState(floor="user", user="speaking", assistant="silent") if t else None,
                       background=[BackgroundUpdate(task_id="b", status="final", text="ok")] if t == 6 else [],
                       tool_results=[ToolResult(call_id="c", ok=True, value={"x": 1})] if t == 9 else [],
                       speaking=t % 3 == 0)
        ticks.append(TickExample(tick=t, input=si, output=outs[t % len(outs)]))
    return ticks


class ScriptedPicks(KVSession):
    """A session that 'decodes' the given tokens instead of its argmax: teacher forcing through the session."""

    def __init__(self, model, picks, **kw):
        super().__init__(model, trace=True, **kw)
        self.picks = list(picks)

    def _pick(self, logits):
        return self.picks.pop(0)


def test_dataset_stream_is_what_a_session_appends():
    torch.manual_seed(0)
    model = InteractionModel(tiny()).eval()
    ticks = synthetic_dialog()
    stream = encode_dialog(ticks, model.cfg)
    packer = OutputPacker(model.cfg.outputs_per_tick)
    picks = [tok for ex in ticks for tok in packer.pack(ex.output)]
    session = ScriptedPicks(model, picks)
    for ex, want in zip(ticks, stream.tick_outputs, strict=True):
        assert session.step_tokens(ex.input) == want
    appended = [tok for chunk, _ in session.trace for tok in chunk.tokens] + [session.carry]
    assert appended == stream.tokens.tolist()
    dmel = b"".join(d for chunk, _ in session.trace for d in chunk.dmel)
    patches = b"".join(p for chunk, _ in session.trace for p in chunk.patches)
    assert dmel == stream.dmel.tobytes() and patches == stream.patches.tobytes() and len(stream.patches) == 2
    # target positions are exactly the decoded slots
    outputs = {int(p) for p in np.flatnonzero(stream.target_mask)}
    assert len(outputs) == len(picks)
    # the fast training path over the stream gives the session's logits (exact path) to float tolerance
    session_logits = torch.cat([lg for _, lg in session.trace])
    fast = model(torch.from_numpy(stream.tokens)[None], torch.from_numpy(stream.dmel.copy()),
                 torch.from_numpy(stream.patches.copy())).logits[0]
    torch.testing.assert_close(fast[:-1], session_logits, rtol=1e-4, atol=1e-4)


def test_lag_headers_show_the_assistant_silent_only_while_its_world_has_heard_nothing_yet():
    from microturn.model.layout import ASSISTANT, SPEAKING

    cfg = tiny()
    speaking = DialogState(floor="assistant", user="yielding", assistant="speaking")
    ticks = [TickExample(tick=t, input=StepInput(chunk=InputChunk(tick=t), dialog=speaking, speaking=True),
                         output=out) for t, out in enumerate([
        StepOutput(text="Extraordinarily", controls=["speak"]),  # 16 bytes: released two ticks later
        StepOutput(controls=["speak"]),
        StepOutput(text="long", controls=["speak"]),
        StepOutput(text="words.", controls=["speak", "end_utterance"]),
        StepOutput(controls=["silence"]),
    ])]
    plain = encode_dialog(ticks, cfg)
    lagged = encode_dialog(ticks, cfg, lag_headers=1.0)
    flipped = [t for t, s in enumerate(plain.tick_starts) if plain.tokens[s + 4] != lagged.tokens[s + 4]]
    assert flipped == [1, 2]  # the first word is still being spelled out; once out, the world hears it
    s = lagged.tick_starts[1]
    assert lagged.tokens[s + 3] == ASSISTANT["silent"] and lagged.tokens[s + 4] == SPEAKING[False]
    assert np.array_equal(plain.target_mask, lagged.target_mask)
    assert np.array_equal(plain.tokens[plain.target_mask], lagged.tokens[lagged.target_mask])  # targets kept
    assert np.array_equal(encode_dialog(ticks, cfg, lag_headers=0.5, seed=3).tokens,
                          encode_dialog(ticks, cfg, lag_headers=0.5, seed=3).tokens)


def test_windows_lie_on_tick_boundaries_and_cover_the_stream():
    stream = encode_dialog(synthetic_dialog(40), tiny())
    bounds = set(stream.tick_starts.tolist()) | {len(stream)}
    for stride in (None, 60):
        windows = plan_windows(stream.tick_starts, len(stream), 60, stride)
        assert windows[0][0] == 0 and windows[-1][1] == len(stream)
        assert all(s in bounds and e in bounds and 0 < e - s <= 60 for s, e in windows)
        assert all(b[0] <= a[1] for a, b in itertools.pairwise(windows))  # no gaps
    disjoint = plan_windows(stream.tick_starts, len(stream), 60, 60)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(disjoint))
    data = WindowDataset([synthetic_dialog(40)], tiny(), 60)
    batch, epoch, index = data.batch_at(0, 0, 0, 3)
    assert batch.tokens.shape == (3, 60) and (epoch, index) == (0, 3)
    assert batch.dmel is not None and batch.dmel.shape[0] == int((batch.tokens == DMEL).sum())


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    build_corpus(root / "train", dialogs=2, seed=3, **TINY_CORPUS)
    build_corpus(root / "held", dialogs=1, seed=3, heldout=True, **TINY_CORPUS)
    return root / "train", root / "held"


def datasets(corpora, cfg: TrainConfig):
    mcfg = cfg.model_config()
    return (WindowDataset(load_corpus(corpora[0]), mcfg, cfg.window_len()),
            WindowDataset(load_corpus(corpora[1]), mcfg, cfg.window_len()))


CFG = TrainConfig(config="tiny", steps=12, batch=4, lr=1e-2, warmup=2, seed=1, save_every=4)


def test_a_short_run_lowers_the_loss_and_writes_a_checked_checkpoint(corpora, tmp_path):
    data, held = datasets(corpora, CFG)
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 40, "session_ticks": 30})
    result = train(cfg, data, tmp_path / "m.pt", heldout=held, heldout_dialogs=list(load_corpus(corpora[1])),
                   progress=False)
    assert result.finished and result.steps == 40
    first = np.mean([loss for _, loss in result.losses[:2]])
    last = np.mean([loss for _, loss in result.losses[-2:]])
    assert last < 0.6 * first
    _, manifest = load_checkpoint(tmp_path / "m.pt", config=tiny())
    assert manifest["training"]["steps_done"] == 40 and manifest["training"]["seed"] == 1
    m = manifest["heldout_metrics"]
    assert m["ticks"] > 0 and 0 <= m["tick_agreement"] <= 1 and m == result.metrics
    assert m["session_ticks"] == 30 and 0 <= m["session_tick_agreement"] <= 1
    assert json.loads((tmp_path / "m.json").read_text())["sha256"] == manifest["sha256"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(corpora, tmp_path):
    data, _ = datasets(corpora, CFG)
    straight = train(CFG, data, tmp_path / "a.pt", progress=False)
    first = train(CFG, data, tmp_path / "b.pt", progress=False, stop_after=5)
    assert not first.finished and first.steps == 5
    with pytest.raises(TrainError, match="--resume"):
        train(CFG, data, tmp_path / "b.pt", progress=False)
    second = train(CFG, data, tmp_path / "b.pt", progress=False, resume=True)
    assert second.finished and second.steps == 12
    # the interrupted run also logged its stop step (5); every step both logged has the same loss
    assert {s: v for s, v in second.losses if s != 5} == dict(straight.losses)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise
    again = train(CFG, data, tmp_path / "b.pt", progress=False, resume=True)
    assert again.noop and again.steps == 12
    with pytest.raises(TrainError, match="other settings"):
        train(TrainConfig(**{**CFG.__dict__, "lr": 5e-3}), data, tmp_path / "b.pt", progress=False, resume=True)


class Oracle(torch.nn.Module):
    """Puts all the mass on the next token of the stream it is given: the held-out metric must be 100 %."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    def forward(self, tokens, dmel=None, patches=None):
        logits = torch.zeros(*tokens.shape, self.cfg.vocab_size)
        logits[:, :-1].scatter_(-1, tokens[:, 1:, None], 50.0)
        return type("Out", (), {"logits": logits})


def test_the_heldout_metric_is_perfect_for_the_oracle_and_low_for_noise():
    data = WindowDataset([synthetic_dialog(30)], tiny(), 72)
    perfect = evaluate(Oracle(tiny()), data)
    assert perfect["ticks"] == 30 and perfect["tick_agreement"] == 1.0 and perfect["output_ce"] < 1e-3
    torch.manual_seed(0)
    noise = evaluate(InteractionModel(tiny()), data)
    assert noise["ticks"] == 30 and noise["tick_agreement"] < 0.5


def run_cli(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", *argv])
    return args.fn(args)


def test_cli_trains_resumes_and_names_bad_arguments(corpora, tmp_path, capsys):
    train_dir, held_dir = map(str, corpora)
    out = str(tmp_path / "c.pt")
    base = ["--corpus", train_dir, "--out", out, "--config", "tiny", "--batch", "2", "--threads", "1"]
    assert run_cli([*base, "--steps", "3", "--heldout", held_dir, "--session-ticks", "5"]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["heldout_metrics"]["session_ticks"] == 5
    assert "finished at step 3" in capsys.readouterr().out
    assert state_path(out).exists() and (tmp_path / "c.json").exists()
    assert run_cli([*base, "--steps", "3", "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    for argv, message in [
        ([*base, "--steps", "3"], "--resume"),
        ([*base, "--steps", "0"], "steps: expected a positive integer"),
        ([*base, "--lr", "-1"], "lr: expected a positive number"),
        ([*base, "--minutes", "0"], "minutes: expected a positive number"),
        ([*base, "--threads", "0"], "threads: expected a positive integer"),
        ([*base, "--session-ticks", "-1"], "session_ticks must be ≥ 0"),
        (["--corpus", train_dir, "--out", out, "--config", "huge"], "config: expected one of"),
        (["--corpus", str(tmp_path / "nope"), "--out", out], "no corpus manifest"),
        ([*base, "--heldout", train_dir], "another corpus"),
    ]:
        assert run_cli(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
