"""The reference architecture: embeddings, the hMLP stem, MoE routing, masks, shapes, the exact and fast paths,
the flow head and a tiny training run."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import numpy as np
from model_streams import one_thread, step_inputs

from microturn.model.config import ConfigError, ModelConfig, embedded, tiny
from microturn.model.layout import (
    ARG,
    ARG_END,
    CONTROL,
    DMEL,
    END,
    PATCH,
    TICK,
    VOCAB_SIZE,
    EncodedTick,
    LayoutError,
    OutputDecoder,
    OutputPacker,
    TickEncoder,
)
from microturn.model.protocol import StepOutput, ToolRequest
from microturn.model.torch_model import InteractionModel, load_balance_loss, parameter_count

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return InteractionModel(tiny()).eval()


def test_config_presets_validate_and_bad_fields_are_named():
    assert tiny().vocab_size == VOCAB_SIZE and embedded().global_layers == ()
    with pytest.raises(ConfigError, match="n_kv_heads"):
        ModelConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ConfigError, match="global_layers"):
        ModelConfig(n_layers=2, global_layers=(5,))
    with pytest.raises(ConfigError, match="top_k"):
        ModelConfig(n_experts=2, top_k=3)


def test_layout_round_trips_oracle_outputs_through_k_slots():
    packer, decoder = OutputPacker(6), OutputDecoder()
    outs = [
        StepOutput(text="Let", controls=["speak", "delegate"], delegate="what is up"),
        StepOutput(controls=["speak"]),
        StepOutput(text="conversation.", controls=["speak", "end_utterance"]),
        StepOutput(controls=["tool_call"], tool_call=ToolRequest(name="calculate", args={"a": 1})),
        StepOutput(controls=["silence"]),
    ] + [StepOutput(controls=["silence"])] * 12
    decoded = []
    for out in outs:
        tokens = packer.pack(out)
        assert 1 <= len(tokens) <= 6 and (len(tokens) == 6 or tokens[-1] == END)
        decoded.append(decoder.decode(tokens))
    text = " ".join(d.text for d in decoded if d.text)
    assert text == "Let conversation."
    assert [d.delegate for d in decoded if d.delegate] == ["what is up"]
    assert [d.tool_call for d in decoded if d.tool_call] == [ToolRequest(name="calculate", args={"a": 1})]
    flat = [c for d in decoded for c in d.controls]
    assert flat.index("end_utterance") > flat.index("speak")
    # end_utterance is never released before the last word it closes
    i_end = next(i for i, d in enumerate(decoded) if "end_utterance" in d.controls)
    i_word = next(i for i, d in enumerate(decoded) if "conversation." in d.text)
    assert i_end >= i_word
    with pytest.raises(LayoutError, match="unknown control"):
        packer.pack(StepOutput(controls=["sing"]))


def test_layout_puts_each_ticks_controls_first_and_holds_closers_behind_their_text():
    packer, decoder = OutputPacker(6), OutputDecoder()
    outs = [
        StepOutput(text="extraordinarily", controls=["speak"]),  # 16 bytes: three ticks of text
        StepOutput(controls=["speak"]),
        StepOutput(text="long.", controls=["translate", "end_utterance"]),
        StepOutput(controls=["silence"]),  # words still queued: held back, then dropped (the utterance ends)
        StepOutput(controls=["backchannel"]),
        StepOutput(controls=["silence"]),
        StepOutput(controls=["silence"]),
    ]
    packed = [packer.pack(out) for out in outs]
    decoded = [decoder.decode(tokens) for tokens in packed]
    # a tick's controls open its slots however much text is queued
    assert [t[0] for t in packed[:3]] == [CONTROL["speak"], CONTROL["speak"], CONTROL["translate"]]
    assert [d.controls for d in decoded[:3]] == [["speak"], ["speak"], ["translate"]]
    assert packed[4][0] == CONTROL["backchannel"] and decoded[4].controls[0] == "backchannel"
    assert all(len(t) <= 6 and (len(t) == 6 or t[-1] == END) for t in packed)
    # end_utterance goes out in the tick that releases the last word, and nothing after it shares the tick
    i_end = next(i for i, d in enumerate(decoded) if "end_utterance" in d.controls)
    assert decoded[i_end].text.endswith("long.") and packed[i_end][-2:] == [ord(" "), END]
    assert " ".join(d.text for d in decoded if d.text) == "extraordinarily long."
    # silence never shows while words are still queued, so it can never cut them
    assert all("silence" not in d.controls for d in decoded[:i_end + 1])
    assert decoded[-1].controls == ["silence"] and packed[-1] == [CONTROL["silence"], END]


def test_layout_sends_a_replys_first_word_before_its_payload_and_the_payload_in_spare_slots():
    packer, decoder = OutputPacker(6), OutputDecoder()
    call = ToolRequest(name="calculate", args={"expression": "12 * 7"})
    outs = [
        StepOutput(text="Let", controls=["speak", "tool_call", "delegate"], tool_call=call, delegate="why?"),
        StepOutput(controls=["speak"]),
        StepOutput(text="me", controls=["speak"]),
    ] + [StepOutput(controls=["speak"])] * 14
    packed = [packer.pack(out) for out in outs]
    decoded = [decoder.decode(tokens) for tokens in packed]
    # the first word fills the first tick after its controls; the payloads wait for spare slots
    assert packed[0] == [CONTROL["speak"], CONTROL["tool_call"], CONTROL["delegate"], *b"Let"]
    assert decoded[0].text == "" and decoded[1].text == "Let"  # released at its space
    assert packed[1][:3] == [CONTROL["speak"], ord(" "), ARG]
    # each tick's share of a payload opens with ARG, after that tick's words
    assert all(t.index(ARG) > max((i for i, x in enumerate(t) if x < 256 and ARG not in t[:i]), default=-1)
               for t in packed if ARG in t)
    assert " ".join(d.text for d in decoded if d.text) == "Let me"
    assert [d.tool_call for d in decoded if d.tool_call] == [call]
    assert [d.delegate for d in decoded if d.delegate] == ["why?"]
    i_call = next(i for i, d in enumerate(decoded) if d.tool_call)
    i_goal = next(i for i, d in enumerate(decoded) if d.delegate)
    assert i_call < i_goal and "tool_call" in decoded[i_call].controls
    assert not packer.payload and decoder.arg is None and not decoder.held
    # two payloads may share a tick: the second opens with its own ARG; a call without arguments is its name
    wide, decoder = OutputPacker(16), OutputDecoder()
    tokens = wide.pack(StepOutput(controls=["tool_call", "delegate"], tool_call=ToolRequest(name="now"), delegate="b"))
    assert tokens == [CONTROL["tool_call"], CONTROL["delegate"], ARG, *b"now", ARG_END, ARG, ord("b"), ARG_END, END]
    out = decoder.decode(tokens)
    assert (out.tool_call, out.delegate, out.controls) == (ToolRequest(name="now"), "b", ["tool_call", "delegate"])


def test_decoder_counts_a_tool_payload_that_does_not_parse():
    decoder = OutputDecoder()
    for payload in (b"", b"calc {broken", b"calc [1]"):
        out = decoder.decode([CONTROL["tool_call"], ARG, *payload, ARG_END, END])
        assert out.tool_call is None and "tool_call" not in out.controls
    assert decoder.malformed == 3


def test_decoder_state_round_trips_mid_payload():
    packer, decoder = OutputPacker(6), OutputDecoder()
    call = ToolRequest(name="session_time")
    first = decoder.decode(packer.pack(StepOutput(text="Now", controls=["speak", "tool_call"], tool_call=call)))
    decoder.decode(packer.pack(StepOutput(controls=["speak"])))
    assert decoder.arg and first.tool_call is None
    saved, twin = decoder.state(), OutputDecoder()
    twin.load(saved)
    rest = [packer.pack(StepOutput(controls=["speak"])) for _ in range(8)]
    assert [decoder.decode(t) for t in rest] == [twin.decode(t) for t in rest]


def test_tick_encoder_header_items_and_fifo_bound():
    enc = TickEncoder(max_input_tokens=10)
    inputs = step_inputs(5)
    first = enc.encode(inputs[0])
    assert first.tokens[0] == TICK and first.tokens.count(DMEL) == 4 and len(first.dmel) == 4
    second = enc.encode(inputs[1])  # 4 frames + USER_TEXT + 11 bytes > 10: the rest waits
    assert len(second.tokens) == 6 + 10 and enc.queue
    third = enc.encode(inputs[2])
    assert third.tokens[6:8] == [ord(" "), ord("t")]  # " there" waited a tick


def test_dmel_embedding_is_the_sum_over_bands_of_band_level_rows(model):
    levels = torch.tensor(np.random.default_rng(1).integers(0, 16, (3, 80)), dtype=torch.uint8)
    got = model.embed_dmel(levels)
    table = model.dmel_emb.detach().reshape(80, 16, -1)
    want = torch.stack([sum(table[b, int(levels[i, b])] for b in range(80)) for i in range(3)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # a frame's bits do not depend on the other frames in the call
    assert torch.equal(model.embed_dmel(levels[1:2]), got[1:2])


def test_hmlp_stem_on_known_inputs(model):
    stem = model.stem
    rng = np.random.default_rng(2)
    patches = torch.tensor(rng.integers(0, 256, (3, 40, 40, 3)), dtype=torch.uint8)
    got = stem(patches, exact=True)
    assert got.shape == (3, model.cfg.d_model)
    # independent re-implementation: loops over the hierarchy by hand
    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    def act(x):
        return x * torch.sigmoid(1.702 * x)

    def manual(p):
        img = p.float() / 255
        s1 = torch.stack([torch.stack([img[4 * r:4 * r + 4, 4 * c:4 * c + 4].reshape(-1) for c in range(10)])
                          for r in range(10)])
        s1 = act(norm(s1 @ stem.w1.detach().t(), stem.n1.detach()))
        s2 = torch.stack([torch.stack([torch.cat([s1[2 * r + i, 2 * c + j] for i in range(2) for j in range(2)])
                                       for c in range(5)]) for r in range(5)])
        s2 = act(norm(s2 @ stem.w2.detach().t(), stem.n2.detach()))
        s3 = act(norm(s2.reshape(-1) @ stem.w3.detach().t(), stem.n3.detach()))
        return s3 @ stem.proj.detach().t()

    for i in range(3):
        torch.testing.assert_close(got[i], manual(patches[i]), rtol=1e-4, atol=1e-4)
    assert torch.equal(stem(patches[2:3], exact=True), got[2:3])  # batch-invariant bits
    # hierarchical, not a bag of pixels: swapping two 8x8 quadrants changes the vector
    swapped = patches.clone()
    swapped[0, :8, :8], swapped[0, :8, 8:16] = patches[0, :8, 8:16], patches[0, :8, :8]
    assert not torch.allclose(stem(swapped[:1], exact=True), got[:1])


def test_moe_routing_picks_top_k_and_the_balance_loss_rewards_uniform_routing(model):
    moe = model.blocks[0].moe
    x = torch.randn(20, model.cfg.d_model, generator=torch.Generator().manual_seed(20))
    logits, ids, weights = moe.route(x, exact=True)
    assert ids.shape == (20, 2) and torch.equal(ids, torch.topk(logits, 2).indices)
    torch.testing.assert_close(weights.sum(-1), torch.ones(20))
    torch.testing.assert_close(weights, torch.softmax(torch.topk(logits, 2).values, -1))
    e = 4
    uniform = load_balance_loss(torch.zeros(8, e), torch.tensor([[0, 1], [2, 3]] * 4), e)
    skewed_logits = torch.tensor([[5.0, 4.0, 0.0, 0.0]] * 8)
    skewed = load_balance_loss(skewed_logits, torch.tensor([[0, 1]] * 8), e)
    assert uniform.item() == pytest.approx(1.0) and skewed.item() > 1.5
    out, lb = moe(x, exact=False)
    exact_out, _ = moe(x, exact=True)
    torch.testing.assert_close(out, exact_out, rtol=1e-4, atol=1e-5)
    assert lb.item() >= 1.0 - 1e-6


def test_shapes_and_window_mask_of_the_fast_path(model):
    cfg = model.cfg
    tokens = torch.randint(0, 256, (2, 70), generator=torch.Generator().manual_seed(70))
    out = model(tokens)
    assert out.logits.shape == (2, 70, cfg.vocab_size) and out.hidden.shape == (2, 70, cfg.d_model)
    # causal: changing a later token leaves earlier logits alone
    changed = tokens.clone()
    changed[:, 60] = (changed[:, 60] + 1) % 256
    out2 = model(changed)
    torch.testing.assert_close(out.logits[:, :60], out2.logits[:, :60])
    assert not torch.allclose(out.logits[:, 60:], out2.logits[:, 60:])
    # sliding window: with only local layers, a token more than n_layers*window back has no influence
    local = InteractionModel(ModelConfig(**{**_fields(cfg), "global_layers": (), "window": 8})).eval()
    a, b = tokens[:1].clone(), tokens[:1].clone()
    b[0, 0] = (b[0, 0] + 1) % 256
    la, lb_ = local(a).logits, local(b).logits
    reach = cfg.n_layers * 7
    assert torch.equal(la[0, reach + 1:], lb_[0, reach + 1:])
    assert not torch.equal(la[0, 1:reach], lb_[0, 1:reach])


def _fields(cfg):
    return {f: getattr(cfg, f) for f in cfg.__struct_fields__}


def test_exact_path_matches_fast_path(model):
    from microturn.model.kv_session import KVSession

    enc = TickEncoder(64)
    chunk = EncodedTick([])
    for si in step_inputs(6):
        chunk.extend(enc.encode(si))
    tokens, dmel, patches = chunk.arrays()
    t = torch.from_numpy(tokens)
    d, p = torch.from_numpy(dmel.copy()), torch.from_numpy(patches.copy())
    fast = model(t[None], d, p).logits[0]
    session = KVSession(model, ring=False, capacity=len(tokens))
    exact = session.append(chunk)
    assert (t == PATCH).sum() == 2
    torch.testing.assert_close(exact, fast, rtol=1e-4, atol=1e-4)


def test_flow_head_learns_a_conditional_target_and_samples():
    torch.manual_seed(0)
    cfg = tiny()
    model = InteractionModel(cfg)
    cond = torch.randn(64, cfg.d_model)
    data = cond[:, : cfg.flow_dim].repeat(1, -(-cfg.flow_dim // cfg.d_model))[:, : cfg.flow_dim] * 0.5
    opt = torch.optim.Adam(model.flow.parameters(), lr=3e-3)
    def held_out():
        return model.flow.loss(cond.repeat(8, 1), data.repeat(8, 1), torch.Generator().manual_seed(7)).item()

    g = torch.Generator().manual_seed(0)
    first = held_out()
    for _ in range(300):
        loss = model.flow.loss(cond, data, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out() < 0.75 * first  # flow matching keeps an irreducible part (the noise draw)
    sample = model.flow.sample(cond[:4], steps=8, generator=torch.Generator().manual_seed(1))
    assert (sample - data[:4]).pow(2).mean() < data[:4].pow(2).mean() + 1.0  # drawn towards its target
    assert sample.shape == (4, cfg.flow_dim) and torch.isfinite(sample).all()


def test_a_tiny_training_run_lowers_the_loss():
    torch.manual_seed(0)
    model = InteractionModel(tiny())
    packer = OutputPacker(model.cfg.outputs_per_tick)
    enc = TickEncoder(model.cfg.max_input_tokens)
    outs = [StepOutput(text="hi", controls=["speak", "end_utterance"]) if t % 4 == 3 else
            StepOutput(controls=["silence"]) for t in range(12)]
    seq, mask = EncodedTick([]), []
    for si, out in zip(step_inputs(12, images=False), outs, strict=True):
        e = enc.encode(si)
        o = packer.pack(out)
        seq.extend(e)
        seq.extend(EncodedTick(o))
        mask += [False] * len(e.tokens) + [True] * len(o)
    tokens, dmel, _ = seq.arrays()
    t = torch.from_numpy(tokens)[None]
    m = torch.tensor(mask)[None]
    d = torch.from_numpy(dmel.copy())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, parts = model.loss(t, m, d)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["ce"])
    assert losses[-1] < 0.5 * losses[0]


def test_parameter_counts_of_the_presets():
    assert parameter_count(InteractionModel(tiny())) < 200_000
    assert parameter_count(InteractionModel(embedded())) < 2_000_000
