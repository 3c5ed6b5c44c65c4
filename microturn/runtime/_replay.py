"""Replay: run a recorded session again in lockstep and compare every message, bit for bit.

The recording's header names a factory that rebuilds the actors. A recording is data, so that name is only
looked up, never imported on the file's say: it must be registered (:func:`register_factory`) or one of
microturn's own (:data:`KNOWN_FACTORIES`); any other factory comes from the user (``factory=``,
``--factory``). Params that would make the factory write files (``wav_path``) are dropped. Replay schedules every recorded input (a
message whose source is not one of the session's actors) at its recorded session time, runs as many ticks as
the original, and compares the encoded bytes of every message in sequence order. The first difference is
reported with its tick and seq, and what was expected and got.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence

import msgspec
from msgspec.structs import replace

from microturn.messages import AnyMessage, Message, SessionEnded, describe, encode

from ._actor import Actor
from ._errors import RecordingError, SessionFailed
from ._recording import Damage, Recording, read_recording
from ._session import open_session

__all__ = [
    "KNOWN_FACTORIES",
    "Divergence",
    "ReplayResult",
    "load_factory",
    "register_factory",
    "replay",
    "resolve_factory",
]

ActorFactory = Callable[..., Sequence[Actor]]

KNOWN_FACTORIES: tuple[str, ...] = (
    "microturn.scenarios.runner:build_actors",
    "microturn.assembly:build_from_params",
    "microturn.demo:build",
)
"""microturn's own actor factories: a recording may name these, and replay imports them (lazily) by name.
Adding one of microturn's factories is one line here; a recording naming anything else needs the user's
``--factory`` (or ``factory=``), because a recording is data and must never choose what code runs."""

_registered: dict[str, ActorFactory] = {}

_NO_FILES = ("wav_path",)
"""Params a factory would turn into files written; replay sets them to None (it writes nothing a file names)."""


class Divergence(msgspec.Struct, frozen=True, kw_only=True):
    """The first message where the replay differs from the recording (``got`` is None when it is missing)."""

    index: int
    tick: int
    seq: int
    expected: str
    got: str | None

    def __str__(self) -> str:
        return (
            f"diverged at tick {self.tick}, seq {self.seq} (message #{self.index}):\n"
            f"  expected: {self.expected}\n  got:      {self.got if self.got is not None else '(nothing)'}"
        )


class ReplayResult(msgspec.Struct, kw_only=True):
    """The outcome of a replay: how many messages matched, the first divergence if any, and what the
    recording had lost (``damage``; ``truncated`` when anything was lost)."""

    path: str
    compared: int
    divergence: Divergence | None
    truncated: bool
    problem: str | None = None
    damage: list[Damage] = []

    @property
    def ok(self) -> bool:
        """True when every compared message matched (see :attr:`complete` for whether all were there)."""
        return self.divergence is None

    @property
    def complete(self) -> bool:
        """True when the recording lost nothing, so the comparison covered the whole session."""
        return not self.damage


def register_factory(name: str, factory: ActorFactory) -> None:
    """Let recordings that name ``name`` be replayed with ``factory`` (called by the module that owns it)."""
    if not callable(factory):
        raise TypeError(f"register_factory({name!r}, ...) needs a callable, got {factory!r}")
    _registered[name] = factory


def resolve_factory(name: str) -> ActorFactory:
    """The factory a recording names: a registered one, or one of :data:`KNOWN_FACTORIES` (imported on first
    use). Anything else is refused without importing anything."""
    factory = _registered.get(name)
    if factory is not None:
        return factory
    if name in KNOWN_FACTORIES:
        return load_factory(name)
    raise RecordingError(
        f"the recording names an unknown actor factory {name!r}; replay builds only known factories "
        f"({', '.join(sorted({*KNOWN_FACTORIES, *_registered}))}). A recording is data, so it cannot choose "
        f"the code that runs: if you trust it, say which factory to use with --factory MODULE:FUNCTION "
        f"(replay(..., factory=...) in Python)"
    )


def load_factory(spec: str) -> ActorFactory:
    """Import ``"package.module:function"``; errors name the spec and what is wrong with it. This runs the
    module's code: call it only with a spec the user gave (``--factory``), never with one a file names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RecordingError(f"actor factory {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecordingError(f"cannot import actor factory module {module_name!r}: {exc}") from exc
    try:
        factory = getattr(module, attr)
    except AttributeError:
        raise RecordingError(f"actor factory {spec!r}: module {module_name!r} has no {attr!r}") from None
    if not callable(factory):
        raise RecordingError(f"actor factory {spec!r} is not callable")
    return factory


def _line(message: Message) -> str:
    stamp = message.stamp
    where = f"[{stamp.source} t={stamp.time:.3f}] " if stamp is not None else ""
    return f"{where}{type(message).__name__} {describe(message, limit=200)}"


async def replay(
    recording: str | os.PathLike[str] | Recording,
    *,
    factory: ActorFactory | None = None,
) -> ReplayResult:
    """Replay ``recording`` (a path or a loaded :class:`Recording`) in lockstep; needs a MockClock (use
    :func:`microturn.runtime.run_lockstep` or pytest-trio's ``autojump_clock``). ``factory`` overrides the
    recorded one, e.g. to check a changed actor against an old recording; without it the recorded name must
    be a known factory (:func:`resolve_factory`), else :class:`RecordingError`. Messages are compared by
    seq, so a gap the reader reported (``damage``) is skipped, not counted as a divergence."""
    rec = recording if isinstance(recording, Recording) else read_recording(recording)
    header = rec.header
    name = getattr(factory, "__qualname__", repr(factory))
    if factory is None:
        if header.factory is None:
            raise RecordingError(
                f"recording {rec.path!r} names no actor factory; pass factory=... (--factory MODULE:FUNCTION) "
                f"to say how to build its actors"
            )
        factory, name = resolve_factory(header.factory), header.factory
    params = {key: None if key in _NO_FILES else value for key, value in header.params.items()}
    try:
        actors = list(factory(**params))
    except Exception as exc:  # the params come from the file: whatever they provoke is its error
        raise RecordingError(
            f"recording {rec.path!r}: actor factory {name!r} refused the recorded params "
            f"({', '.join(sorted(params)) or 'none'}): {type(exc).__name__}: {exc}"
        ) from exc
    if not all(isinstance(actor, Actor) for actor in actors):
        raise RecordingError(f"recording {rec.path!r}: actor factory {name!r} returned something other than actors")
    expected = rec.messages
    ended = next((m for m in reversed(expected) if isinstance(m, SessionEnded)), None)
    got: list[AnyMessage] = []

    try:
        async with open_session(
            actors,
            mode="lockstep",
            tick_period=header.tick_period,
            session_id=header.session_id,
            taps=[got.append],
        ) as session:
            for message in rec.inputs:
                assert message.stamp is not None
                session.schedule(replace(message, stamp=None), message.stamp.time, source=message.stamp.source)
            if ended is not None:
                # no further than the recording's own last tick, whatever a (crafted) SessionEnded claims
                if ended.ticks:
                    assert ended.stamp is not None
                    await session.wait_tick(min(ended.ticks - 1, ended.stamp.tick))
                assert ended.stamp is not None
                await session.clock.sleep_until(ended.stamp.time)
            elif expected:
                last = expected[-1].stamp
                assert last is not None
                await session.wait_tick(last.tick)
    except SessionFailed:
        pass  # the original may have failed the same way; the comparison below says whether it did

    # compared by seq, not position: a message lost to damage leaves a gap that the replay still fills
    by_seq = {m.stamp.seq: m for m in got if m.stamp is not None}
    compared = 0
    divergence = None
    for index, want in enumerate(expected):
        assert want.stamp is not None
        have = by_seq.get(want.stamp.seq)
        if have is None or encode(have) != encode(want):
            assert want.stamp is not None
            divergence = Divergence(
                index=index,
                tick=want.stamp.tick,
                seq=want.stamp.seq,
                expected=_line(want),
                got=None if have is None else _line(have),
            )
            break
        compared += 1
    if divergence is None and not rec.truncated and len(got) > len(expected):
        recorded = {m.stamp.seq for m in expected if m.stamp is not None}
        extra = next(m for m in got if m.stamp is not None and m.stamp.seq not in recorded)
        assert extra.stamp is not None
        divergence = Divergence(
            index=len(expected), tick=extra.stamp.tick, seq=extra.stamp.seq, expected="(nothing)", got=_line(extra)
        )
    return ReplayResult(
        path=rec.path, compared=compared, divergence=divergence, truncated=rec.truncated, problem=rec.problem,
        damage=list(rec.damage),
    )

