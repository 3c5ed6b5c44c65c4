"""The synthetic interaction corpus: generated dialogs run in lockstep, labelled by the scripted policy.

Each dialog of :mod:`microturn.training.dialogs` runs in the scenario machinery's session (clock, perception,
dialog state, interaction actor, output mixer and the scenario's world) with the scripted policy as the
interaction backend, wrapped in a :class:`RecordingBackend`: every tick, the :class:`StepInput` the
interaction actor handed to the model and the :class:`StepOutput` the oracle answered are kept as a
:class:`TickExample` — exactly what a learned model sees and what it should say.

**Shards.** Dialogs are written in shards of ``dialogs_per_shard``; shard ``i`` holds dialogs
``i*n .. i*n+n-1`` (a dialog depends only on the corpus seed, the split and its index). A shard file is::

    b"MTCORPUS"  u32 format version  u64 payload length  32-byte sha256 of the payload  payload

(little-endian), the payload being zlib-compressed msgpack (msgspec) of a :class:`Shard`. Bytes fields
(dMel, image patches, audio) stay bytes. Shards are written to a temporary name and renamed, so a file
with a shard's name is complete unless it was damaged afterwards; loading checks magic, version, length,
digest and schema and raises :class:`CorpusError` naming the file.

**Manifest.** ``manifest.json`` (written last, deterministic: no wall-clock figures) records the format and
generator versions, seed, split, counts, the category histogram and each shard's size and sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from microturn.model.protocol import StepInput, StepOutput

from .dialogs import GENERATOR_VERSION, GeneratedDialog, generate_dialogs

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "BuildReport",
    "CorpusError",
    "DialogRecord",
    "RecordingBackend",
    "Shard",
    "SlotTimedBackend",
    "TickExample",
    "build_corpus",
    "format_stats",
    "load_corpus",
    "load_dialogs",
    "read_manifest",
    "read_shard",
    "run_dialog",
    "stats",
    "write_shard",
]

FORMAT_VERSION = 1
"""Version of the shard layout and of the Structs below; readers refuse any other."""
MAGIC = b"MTCORPUS"
_HEADER = struct.Struct("<8sIQ32s")
MANIFEST = "manifest.json"


class CorpusError(RuntimeError):
    """A corpus file that cannot be used: names the file and what is wrong with it."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TickExample(msgspec.Struct, frozen=True, kw_only=True):
    """One tick: what the model was handed and what the oracle answered."""

    tick: int
    input: StepInput
    output: StepOutput


class DialogRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One dialog of the corpus: how it was generated, and its ticks in order."""

    index: int
    seed: int
    name: str
    categories: list[str]
    mode: str
    voice: str
    wpm: int
    world: str
    duration: float
    ticks: list[TickExample]


class Shard(msgspec.Struct, frozen=True, kw_only=True):
    """A shard file's payload."""

    format: int
    generator: int
    seed: int
    heldout: bool
    index: int
    first_dialog: int
    dialogs: list[DialogRecord]


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Shard)


# --- capture -------------------------------------------------------------------------------------------------


class _RecordingSession:
    """Delegates to the inner session and keeps every (StepInput, StepOutput) pair."""

    def __init__(self, inner: Any, log: list[TickExample]) -> None:
        self.inner = inner
        self.log = log
        self.blocking = getattr(inner, "blocking", False)

    def step_sync(self, step_input: StepInput) -> StepOutput:
        output = self.inner.step_sync(step_input)
        self.log.append(TickExample(tick=step_input.chunk.tick, input=step_input, output=output))
        return output

    async def step(self, step_input: StepInput) -> StepOutput:
        output = await self.inner.step(step_input)
        self.log.append(TickExample(tick=step_input.chunk.tick, input=step_input, output=output))
        return output

    async def close(self) -> None:
        await self.inner.close()


class _SlotTimedSession:
    """Delegates to the inner session and hands on what a model laying its output out in K slots would say."""

    def __init__(self, inner: Any, slots: int) -> None:
        from microturn.model.layout import OutputDecoder, OutputPacker

        self.inner = inner
        self.blocking = getattr(inner, "blocking", False)
        self.packer, self.decoder = OutputPacker(slots), OutputDecoder()

    def _lay_out(self, output: StepOutput) -> StepOutput:
        said = self.decoder.decode(self.packer.pack(output))
        return msgspec.structs.replace(said, audio=output.audio)

    def step_sync(self, step_input: StepInput) -> StepOutput:
        return self._lay_out(self.inner.step_sync(step_input))

    async def step(self, step_input: StepInput) -> StepOutput:
        return self._lay_out(await self.inner.step(step_input))

    async def close(self) -> None:
        await self.inner.close()


class SlotTimedBackend:
    """A model backend that wraps ``inner`` so the session hears it as a model with ``slots`` output tokens per
    tick would be heard: each step's output goes through the layout's packer and decoder, so words come out at
    their spaces and a tool call or a delegation when its payload is spelled out. A corpus built this way shows
    the oracle's decisions in the world a model that imitates it perfectly lives in (the recorded outputs stay
    the oracle's own, which the same packer turns into the training targets)."""

    def __init__(self, inner: Any, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"SlotTimedBackend(slots=...) must be >= 1, got {slots!r}")
        self.inner = inner
        self.slots = slots
        self.name = f"slots{slots}:{getattr(inner, 'name', 'model')}"

    async def open_session(self, spec: Any) -> _SlotTimedSession:
        return _SlotTimedSession(await self.inner.open_session(spec), self.slots)


class RecordingBackend:
    """A model backend that wraps ``inner`` and records every step of every session it opens in ``examples``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = f"recording:{getattr(inner, 'name', 'model')}"
        self.examples: list[TickExample] = []

    async def open_session(self, spec: Any) -> _RecordingSession:
        return _RecordingSession(await self.inner.open_session(spec), self.examples)


def run_dialog(dialog: GeneratedDialog, *, keep_messages: bool = False, render_audio: bool = False,
               model: str | None = None, wrap: Callable[[Any], Any] | None = None,
               ) -> tuple[list[TickExample], list[Any]]:
    """Run one dialog in lockstep with the oracle (or ``model``, a runner model name); its ticks, and (when
    asked) every bus message. ``render_audio`` voices the assistant (espeak-ng), so its ``Playout`` messages
    carry PCM; ``wrap`` wraps the interaction backend (after the recording one) for the run."""
    from microturn.actors import InteractionActor
    from microturn.runtime import open_session, run_lockstep
    from microturn.scenarios.format import TICK_PERIOD, encode_scenario
    from microturn.scenarios.runner import build_actors
    from microturn.scenarios.triggers import Director, prepare_plans

    scenario = dialog.scenario
    plans = prepare_plans(scenario)  # speech synthesis (cached) happens here, off the session clock
    actors = build_actors(scenario=encode_scenario(scenario), model=model or scenario.model.name,
                          render_audio=render_audio)
    interaction = next(a for a in actors if isinstance(a, InteractionActor))
    # The runner takes backends by name only; swapping the built actor's backend keeps the actor untouched.
    recorder = RecordingBackend(interaction.backend)
    interaction.backend = wrap(recorder) if wrap is not None else recorder
    director = Director(scenario, plans)
    messages: list[Any] = []
    taps = [messages.append, director.observe] if keep_messages else [director.observe]

    async def body() -> None:
        async with open_session(actors, mode="lockstep", tick_period=TICK_PERIOD, session_id=scenario.name,
                                taps=taps) as session:
            director.attach(session)
            await session.run_for(scenario.duration)

    run_lockstep(body)
    return recorder.examples, messages


def record_dialog(dialog: GeneratedDialog, *, slots: int = 0) -> DialogRecord:
    """Run ``dialog`` and package its ticks with its generation details; with ``slots`` the session hears the
    oracle through a :class:`SlotTimedBackend` of that many slots."""
    wrap = (lambda backend: SlotTimedBackend(backend, slots)) if slots else None
    ticks, _ = run_dialog(dialog, wrap=wrap)
    sc = dialog.scenario
    return DialogRecord(index=dialog.index, seed=dialog.seed, name=sc.name, categories=list(dialog.categories),
                        mode=dialog.mode, voice=dialog.voice, wpm=dialog.wpm, world=dialog.world,
                        duration=sc.duration, ticks=ticks)


# --- shard files ---------------------------------------------------------------------------------------------


def write_shard(path: str | os.PathLike[str], shard: Shard) -> str:
    """Write ``shard`` atomically; returns the file's sha256 (hex)."""
    payload = zlib.compress(_ENCODER.encode(shard), 6)
    data = _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest()) + payload
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def read_shard(path: str | os.PathLike[str]) -> Shard:
    """Read and check a shard file; :class:`CorpusError` (naming the file) if it is not an intact shard."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CorpusError(path, f"cannot read the shard: {exc.strerror}") from None
    if len(data) < _HEADER.size:
        raise CorpusError(path, f"truncated: {len(data)} bytes, shorter than the {_HEADER.size}-byte header")
    magic, version, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorpusError(path, f"not a corpus shard (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise CorpusError(path, f"shard format version {version}; this reader reads version {FORMAT_VERSION}")
    payload = data[_HEADER.size :]
    if len(payload) != length:
        raise CorpusError(path, f"truncated or padded: the header says {length} payload bytes, found {len(payload)}")
    if hashlib.sha256(payload).digest() != digest:
        raise CorpusError(path, "corrupt: the payload's sha256 does not match the header")
    try:
        return _DECODER.decode(zlib.decompress(payload))
    except (zlib.error, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorpusError(path, f"undecodable payload: {exc}") from None


def shard_name(index: int) -> str:
    """The file name of shard ``index``."""
    return f"shard-{index:05d}.mtc"


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- building ------------------------------------------------------------------------------------------------


@dataclass
class _ShardSummary:
    index: int
    file: str
    dialogs: int
    ticks: int
    bytes: int
    sha256: str
    categories: dict[str, int]


def _summary(path: Path, shard: Shard) -> _ShardSummary:
    categories: Counter[str] = Counter()
    for d in shard.dialogs:
        categories.update(d.categories)
    return _ShardSummary(shard.index, path.name, len(shard.dialogs), sum(len(d.ticks) for d in shard.dialogs),
                         path.stat().st_size, _file_sha256(path), dict(categories))


def _make_shard(out: str, seed: int, heldout: bool, index: int, first: int, count: int,
                options: dict[str, Any], each: Callable[[DialogRecord], None] | None = None) -> _ShardSummary:
    """Generate, run and write one shard (runs in a worker process when building in parallel); ``each`` is
    called after every dialog."""
    records = []
    options = dict(options)
    slots = options.pop("slots", 0)
    for d in generate_dialogs(seed, count, heldout=heldout, start=first, **options):
        records.append(record_dialog(d, slots=slots))
        if each is not None:
            each(records[-1])
    shard = Shard(format=FORMAT_VERSION, generator=GENERATOR_VERSION, seed=seed, heldout=heldout, index=index,
                  first_dialog=first, dialogs=records)
    path = Path(out) / shard_name(index)
    write_shard(path, shard)
    return _summary(path, shard)


@dataclass
class BuildReport:
    """What :func:`build_corpus` did, with its wall-clock speed."""

    out: str
    dialogs: int
    ticks: int
    shards_written: int
    shards_skipped: int
    shards_replaced: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def dialogs_per_minute(self) -> float:
        return 60.0 * self.dialogs / self.seconds if self.seconds else float("nan")

    @property
    def ticks_per_minute(self) -> float:
        return 60.0 * self.ticks / self.seconds if self.seconds else float("nan")


def _existing(path: Path, seed: int, heldout: bool, index: int, first: int, count: int) -> _ShardSummary | None:
    """A finished shard to keep (None: it must be (re)made). A shard of another corpus is an error."""
    shard = read_shard(path)  # CorpusError if damaged: the caller replaces it
    if (shard.generator, shard.seed, shard.heldout) != (GENERATOR_VERSION, seed, heldout):
        raise CorpusError(path, f"belongs to another corpus (generator {shard.generator}, seed {shard.seed}, "
                                f"heldout {shard.heldout}); this build is generator {GENERATOR_VERSION}, seed "
                                f"{seed}, heldout {heldout}: use another output folder")
    if shard.index != index or shard.first_dialog != first or len(shard.dialogs) != count:
        return None  # another shard size: remake it
    return _summary(path, shard)


def build_corpus(
    out: str | os.PathLike[str],
    *,
    dialogs: int,
    seed: int,
    heldout: bool = False,
    dialogs_per_shard: int = 8,
    workers: int = 1,
    progress: Callable[[int, int, int], None] | None = None,
    **options: Any,
) -> BuildReport:
    """Generate ``dialogs`` dialogs into ``out`` (resumable: intact shards of this corpus are kept) and write
    the manifest. ``progress(dialogs_done, dialogs_total, ticks_done)`` is called after each dialog (with
    ``workers > 1``: after each shard, the granularity a worker process reports). ``options`` go to
    :func:`~microturn.training.dialogs.make_dialog`, except ``slots`` (see :func:`record_dialog`)."""
    if dialogs < 1 or dialogs_per_shard < 1 or workers < 1:
        raise ValueError(f"need dialogs, dialogs_per_shard and workers >= 1, got {dialogs}, {dialogs_per_shard}, "
                         f"{workers}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    jobs = [(i, i * dialogs_per_shard, min(dialogs_per_shard, dialogs - i * dialogs_per_shard))
            for i in range(-(-dialogs // dialogs_per_shard))]
    done: dict[int, _ShardSummary] = {}
    replaced: list[str] = []
    todo = []
    for index, first, count in jobs:
        path = root / shard_name(index)
        if path.exists():
            try:
                kept = _existing(path, seed, heldout, index, first, count)
            except CorpusError as exc:
                if "another corpus" in exc.reason:
                    raise
                kept = None
                replaced.append(f"{path.name}: {exc.reason}")
            if kept is not None:
                done[index] = kept
                continue
        todo.append((index, first, count))
    skipped = len(done)
    counts = [sum(s.dialogs for s in done.values()), sum(s.ticks for s in done.values())]

    def finished(summary: _ShardSummary) -> None:
        done[summary.index] = summary
        counts[0] += summary.dialogs
        counts[1] += summary.ticks
        if progress is not None:
            progress(counts[0], dialogs, counts[1])

    if progress is not None:
        progress(counts[0], dialogs, counts[1])
    args = [(os.fspath(root), seed, heldout, i, f, n, dict(options)) for i, f, n in todo]
    if workers == 1 or len(todo) <= 1:
        for a in args:
            base = list(counts)

            def each(record: DialogRecord, base: list[int] = base) -> None:
                base[0] += 1
                base[1] += len(record.ticks)
                if progress is not None:
                    progress(base[0], dialogs, base[1])

            finished(_make_shard(*a, each=each))
    else:
        import multiprocessing

        # spawn: the parent may hold trio or thread state that must not be forked.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
            futures = [pool.submit(_make_shard, *a) for a in args]
            for future in as_completed(futures):
                finished(future.result())
    _write_manifest(root, seed=seed, heldout=heldout, dialogs=dialogs, per_shard=dialogs_per_shard,
                    options=options, shards=[done[i] for i, _, _ in jobs])
    return BuildReport(os.fspath(root), dialogs, counts[1], len(todo), skipped, replaced,
                       time.perf_counter() - started)


def _write_manifest(root: Path, *, seed: int, heldout: bool, dialogs: int, per_shard: int, options: dict[str, Any],
                    shards: Sequence[_ShardSummary]) -> None:
    categories: Counter[str] = Counter()
    for s in shards:
        categories.update(s.categories)
    manifest = {
        "format": FORMAT_VERSION,
        "generator": GENERATOR_VERSION,
        "kind": "microturn-interaction-corpus",
        "seed": seed,
        "split": "heldout" if heldout else "train",
        # which held-out kind a held-out corpus is: new dialogs with train phrasings, or held-out phrasings too
        "phrasings": options.get("phrasings", "heldout" if heldout else "train"),
        "dialogs": dialogs,
        "ticks": sum(s.ticks for s in shards),
        "dialogs_per_shard": per_shard,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(options.items())},
        "categories": dict(sorted(categories.items())),
        "shards": [{"file": s.file, "dialogs": s.dialogs, "ticks": s.ticks, "bytes": s.bytes, "sha256": s.sha256}
                   for s in shards],
    }
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, root / MANIFEST)


# --- reading -------------------------------------------------------------------------------------------------


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The corpus manifest; :class:`CorpusError` if missing, unreadable or of another format."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except OSError as exc:
        raise CorpusError(path, f"no corpus manifest ({exc.strerror}); was the corpus build finished?") from None
    except json.JSONDecodeError as exc:
        raise CorpusError(path, f"unreadable manifest: {exc}") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise CorpusError(path, f"corpus format {manifest.get('format')!r}; this reader reads {FORMAT_VERSION}")
    return manifest


def load_dialogs(directory: str | os.PathLike[str], *, verify: bool = True) -> Iterator[DialogRecord]:
    """Every dialog of the corpus in ``directory``, in order, with its generation details. Each shard's
    sha256 is checked against the manifest (``verify``) as well as against its own header."""
    root = Path(directory)
    manifest = read_manifest(root)
    for entry in manifest["shards"]:
        path = root / entry["file"]
        if verify:
            try:
                actual = _file_sha256(path)
            except OSError as exc:
                raise CorpusError(path, f"shard listed in the manifest is missing ({exc.strerror})") from None
            if actual != entry["sha256"]:
                raise CorpusError(path, f"sha256 {actual[:16]}… does not match the manifest's {entry['sha256'][:16]}…")
        yield from read_shard(path).dialogs


def load_corpus(directory: str | os.PathLike[str], *, verify: bool = True) -> Iterator[list[TickExample]]:
    """Every dialog of the corpus as its list of ticks (what the training loop reads)."""
    for dialog in load_dialogs(directory, verify=verify):
        yield dialog.ticks


# --- statistics ----------------------------------------------------------------------------------------------


def _label_counts(ticks: Sequence[TickExample]) -> Counter[str]:
    c: Counter[str] = Counter()
    for t in ticks:
        c["ticks"] += 1
        out, inp = t.output, t.input
        if out.text.strip():
            c["speech"] += 1
        for control in set(out.controls):
            c[f"control:{control}"] += 1
        if not out.controls:
            c["control:(none)"] += 1
        if out.delegate:
            c["delegate"] += 1
        if out.tool_call is not None:
            c["tool_call"] += 1
        if inp.chunk.speech_prob >= 0.5:
            c["input_speech"] += 1
        if inp.chunk.text:
            c["input_text"] += 1
        if inp.chunk.n_patches:
            c["input_image"] += 1
        if inp.background:
            c["input_background"] += 1
        if inp.tool_results:
            c["input_tool_result"] += 1
        if inp.speaking:
            c["assistant_speaking"] += 1
    return c


def stats(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Oracle-label statistics of a corpus: per tick fractions (speech, each control token, delegations, tool
    calls, what the input held) over the whole corpus and per category (a dialog's ticks count for each of
    its categories), plus sizes."""
    manifest = read_manifest(directory)
    total: Counter[str] = Counter()
    per_category: dict[str, Counter[str]] = {}
    modes: Counter[str] = Counter()
    dialogs = 0
    for d in load_dialogs(directory):
        dialogs += 1
        modes[d.mode] += 1
        c = _label_counts(d.ticks)
        total.update(c)
        for category in set(d.categories):
            per_category.setdefault(category, Counter()).update(c)

    def fractions(c: Counter[str]) -> dict[str, float]:
        n = c["ticks"] or 1
        return {k: round(v / n, 4) for k, v in sorted(c.items()) if k != "ticks"}

    return {
        "split": manifest["split"],
        "seed": manifest["seed"],
        "dialogs": dialogs,
        "ticks": total["ticks"],
        "seconds": round(total["ticks"] * 0.2, 1),
        "bytes": sum(s["bytes"] for s in manifest["shards"]),
        "modes": dict(modes),
        "categories": manifest["categories"],
        "fractions": fractions(total),
        "per_category": {k: {"ticks": v["ticks"], **fractions(v)} for k, v in sorted(per_category.items())},
    }


def format_stats(s: dict[str, Any]) -> str:
    """A readable table of :func:`stats`."""
    f = s["fractions"]
    lines = [
        f"corpus ({s['split']}, seed {s['seed']}): {s['dialogs']} dialogs, {s['ticks']} ticks "
        f"({s['seconds'] / 60:.1f} min of session time), {s['bytes'] / 1e6:.2f} MB; modes "
        + ", ".join(f"{k} {v}" for k, v in sorted(s["modes"].items())),
        "per tick: " + ", ".join(f"{k} {v:.1%}" for k, v in f.items() if not k.startswith("control:")),
        "controls: " + ", ".join(f"{k[8:]} {v:.1%}" for k, v in f.items() if k.startswith("control:")),
        "",
    ]
    head = ("dialogs", 7), ("ticks", 7), ("speech", 7), ("silence", 8), ("speak", 7), ("backch", 7), \
        ("end_utt", 8), ("deleg", 7), ("tool", 7)
    lines.append(f"{'category':<16} " + " ".join(f"{name:>{width}}" for name, width in head))
    for name, c in s["per_category"].items():
        lines.append(
            f"{name:<16} {s['categories'].get(name, 0):>7} {c['ticks']:>7} {c.get('speech', 0):>7.1%} "
            f"{c.get('control:silence', 0):>8.1%} {c.get('control:speak', 0):>7.1%} "
            f"{c.get('control:backchannel', 0):>7.1%} {c.get('control:end_utterance', 0):>8.1%} "
            f"{c.get('control:delegate', 0):>7.1%} {c.get('control:tool_call', 0):>7.1%}"
        )
    return "\n".join(lines)
