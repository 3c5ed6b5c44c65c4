"""The corpus: capture per tick, shards and manifest, determinism, damage detection, resume, statistics."""

import argparse
import json
from pathlib import Path

import msgspec
import pytest

from microturn.audio import espeak_available
from microturn.messages import DialogState, InputChunk, OutputChunk, SpeechStarted, ToolCall
from microturn.model.layout import OutputDecoder, OutputPacker
from microturn.model.references import ReferenceBook
from microturn.training.cli import register
from microturn.training.corpus import (
    CorpusError,
    SlotTimedBackend,
    build_corpus,
    format_stats,
    load_corpus,
    load_dialogs,
    read_shard,
    record_dialog,
    run_dialog,
    stats,
)
from microturn.training.dialogs import generate_dialogs, make_dialog

# Tiny text-mode dialogs keep a build well under a second.
TINY = {"text_fraction": 1.0, "turns": (1, 2), "away_fraction": 0.0}


def build(out, **kw):
    args = {"dialogs": 4, "seed": 5, "dialogs_per_shard": 2, **TINY, **kw}
    return build_corpus(out, **args)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build(out)
    return out


def shard_bytes(root):
    return {p.name: p.read_bytes() for p in sorted(Path(root).glob("shard-*.mtc"))}


def test_same_seed_gives_byte_identical_shards(corpus, tmp_path):
    build(tmp_path)
    assert shard_bytes(tmp_path) == shard_bytes(corpus)
    assert (tmp_path / "manifest.json").read_bytes() == (corpus / "manifest.json").read_bytes()
    other = tmp_path / "other"
    build(other, seed=6)
    assert shard_bytes(other) != shard_bytes(corpus)


def test_manifest(corpus):
    m = json.loads((corpus / "manifest.json").read_text())
    assert m["format"] == 1 and m["seed"] == 5 and m["split"] == "train" and m["dialogs"] == 4
    assert [s["file"] for s in m["shards"]] == ["shard-00000.mtc", "shard-00001.mtc"]
    assert m["ticks"] == sum(s["ticks"] for s in m["shards"]) == sum(len(d) for d in load_corpus(corpus))
    assert sum(m["categories"].values()) == sum(len(d.categories) for d in load_dialogs(corpus))


def test_round_trip_equals_what_was_captured(corpus):
    loaded = list(load_dialogs(corpus))
    assert [d.index for d in loaded] == [0, 1, 2, 3]
    for d, generated in zip(loaded, generate_dialogs(5, 4, **TINY)):
        again = record_dialog(generated)
        assert d == again  # Structs compare field by field, bytes included
        assert d.ticks and all(t.tick == t.input.chunk.tick for t in d.ticks)


def test_truncated_shard_is_detected_naming_the_file(corpus, tmp_path):
    bad = tmp_path / "shard-00000.mtc"
    data = (corpus / "shard-00000.mtc").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusError, match=r"shard-00000\.mtc: truncated"):
        read_shard(bad)
    bad.write_bytes(data[:20])
    with pytest.raises(CorpusError, match=r"shard-00000\.mtc: truncated"):
        read_shard(bad)


def test_corrupt_shard_is_detected_naming_the_file(corpus, tmp_path):
    copy = tmp_path / "c"
    copy.mkdir()
    for p in corpus.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    data = bytearray((copy / "shard-00001.mtc").read_bytes())
    data[-10] ^= 0xFF
    (copy / "shard-00001.mtc").write_bytes(bytes(data))
    with pytest.raises(CorpusError, match=r"shard-00001\.mtc: sha256 .* does not match the manifest"):
        list(load_corpus(copy))
    with pytest.raises(CorpusError, match=r"shard-00001\.mtc: corrupt"):
        read_shard(copy / "shard-00001.mtc")
    (copy / "shard-00001.mtc").unlink()
    with pytest.raises(CorpusError, match=r"shard-00001\.mtc: shard listed in the manifest is missing"):
        list(load_corpus(copy))
    with pytest.raises(CorpusError, match=r"manifest.json: no corpus manifest"):
        list(load_corpus(tmp_path))


def test_resume_skips_finished_shards_and_replaces_damaged_ones(corpus, tmp_path):
    first = build(tmp_path)
    assert (first.shards_written, first.shards_skipped) == (2, 0)
    kept = tmp_path / "shard-00000.mtc"
    stamp = kept.stat().st_mtime_ns
    (tmp_path / "shard-00001.mtc").unlink()
    again = build(tmp_path)
    assert (again.shards_written, again.shards_skipped) == (1, 1)
    assert kept.stat().st_mtime_ns == stamp  # not rewritten
    assert shard_bytes(tmp_path) == shard_bytes(corpus)
    data = (tmp_path / "shard-00001.mtc").read_bytes()
    (tmp_path / "shard-00001.mtc").write_bytes(data[:100])  # a damaged shard is made again
    third = build(tmp_path)
    assert (third.shards_written, third.shards_skipped) == (1, 1)
    assert third.shards_replaced and "shard-00001.mtc" in third.shards_replaced[0]
    assert shard_bytes(tmp_path) == shard_bytes(corpus)


def test_another_corpus_in_the_folder_is_refused(corpus, tmp_path):
    build(tmp_path)
    with pytest.raises(CorpusError, match="belongs to another corpus"):
        build(tmp_path, seed=99)


def _tiny_speech_dialog():
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    return make_dialog(11, categories=["greeting"], text_fraction=0.0)


def test_capture_matches_the_recorded_messages_tick_by_tick():
    dialog = _tiny_speech_dialog()
    ticks, messages = run_dialog(dialog, keep_messages=True)
    chunks = [m for m in messages if isinstance(m, InputChunk)]
    outputs = [m for m in messages if isinstance(m, OutputChunk)]
    assert len(ticks) == len(chunks) == len(outputs) > 10
    assert any(c.n_frames == 4 and c.speech_prob > 0.5 for c in chunks)  # espeak speech heard as dMel
    states = [m for m in messages if isinstance(m, DialogState)]
    for t, chunk, out in zip(ticks, chunks, outputs):
        assert t.input.chunk == chunk  # the very message, stamp included
        assert out.tick == t.tick + 1
        assert (out.text, out.controls, out.audio) == (t.output.text.strip(), t.output.controls, t.output.audio)
        # the dialog state the model saw is the latest one published before its step's output: the one
        # derived from this very chunk when the chunk changed it
        opened = [m.stamp.seq for m in messages if isinstance(m, SpeechStarted) and chunk.stamp.seq < m.stamp.seq < out.stamp.seq]
        before = [s for s in states if s.stamp.seq < (opened[0] if opened else out.stamp.seq)]
        assert t.input.dialog == (before[-1] if before else None)
    assert any(t.output.text for t in ticks)


def test_a_slot_timed_world_hears_the_oracle_as_its_output_slots_spell_it():
    dialog = make_dialog(11, text_fraction=1.0, categories=["time"], turns=(1, 1))
    ticks, messages = run_dialog(dialog, keep_messages=True, wrap=lambda backend: SlotTimedBackend(backend, 6))
    outputs = [m for m in messages if isinstance(m, OutputChunk)]
    packer, decoder = OutputPacker(6), OutputDecoder()
    heard = [decoder.decode(packer.pack(t.output)) for t in ticks]
    book = ReferenceBook()  # the actor renders reference words from the results it fed, as here
    rendered = []
    for t, h in zip(ticks, heard, strict=True):
        for result in t.input.tool_results:
            book.add_tool(result.ok, result.value)
        rendered.append(book.resolve(h.text)[0])
    assert any("\x01T" in t.output.text for t in ticks) and book.unresolved == 0  # the result said by reference
    # the recorded outputs are the oracle's own; the session got what six slots a tick release of them
    assert [(o.text, o.controls) for o in outputs] == [(r, h.controls) for r, h in zip(rendered, heard, strict=True)]
    said = next(i for i, t in enumerate(ticks) if "tool_call" in t.output.controls)
    (call,) = [m for m in messages if isinstance(m, ToolCall)]
    assert call.stamp.tick > ticks[said].tick + 1  # published once its name was spelled out, not when decided
    assert call.name == ticks[said].output.tool_call.name
    with pytest.raises(ValueError, match="slots"):
        SlotTimedBackend(None, 0)


def test_stats(corpus):
    s = stats(corpus)
    assert s["dialogs"] == 4 and s["ticks"] == sum(len(d) for d in load_corpus(corpus))
    assert 0 < s["fractions"]["speech"] < 1
    assert s["fractions"]["control:silence"] > 0.3
    assert set(s["per_category"]) == set(s["categories"])
    text = format_stats(s)
    assert "4 dialogs" in text and "silence" in text


def test_cli(corpus, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["corpus", "--out", str(corpus), "--stats"])
    assert args.fn(args) == 0
    assert "4 dialogs" in capsys.readouterr().out
    args = parser.parse_args(["corpus", "--out", str(tmp_path), "--stats"])
    assert args.fn(args) == 2
    assert "no corpus manifest" in capsys.readouterr().err


def test_cli_phrasings_pick_the_heldout_kind(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    for phrasings, expected in ((None, "heldout"), ("train", "train")):
        out = tmp_path / str(phrasings)
        argv = ["corpus", "--out", str(out), "--dialogs", "1", "--heldout", "--text-fraction", "1"]
        args = parser.parse_args(argv + (["--phrasings", phrasings] if phrasings else []))
        assert args.fn(args) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert (manifest["split"], manifest["phrasings"]) == ("heldout", expected)
    capsys.readouterr()


def test_shards_are_plain_msgpack_inside(corpus):
    import zlib

    data = (corpus / "shard-00000.mtc").read_bytes()
    raw = msgspec.msgpack.decode(zlib.decompress(data[52:]))  # any msgpack reader can get at the data
    assert raw["format"] == 1 and isinstance(raw["dialogs"][0]["ticks"][0]["input"]["chunk"]["dmel"], bytes)
