"""Replay: run a recorded session again in lockstep and compare every message, bit for bit.

The recording's header names a factory that rebuilds the actors. Replay schedules every recorded input (a
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
from ._recording import Recording, read_recording
from ._session import open_session

__all__ = ["Divergence", "ReplayResult", "replay", "load_factory"]

ActorFactory = Callable[..., Sequence[Actor]]


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
    """The outcome of a replay: how many messages matched, and the first divergence if any."""

    path: str
    compared: int
    divergence: Divergence | None
    truncated: bool
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when every compared message matched."""
        return self.divergence is None


def load_factory(spec: str) -> ActorFactory:
    """Import ``"package.module:function"``; errors name the spec and what is wrong with it."""
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
    recorded one, e.g. to check a changed actor against an old recording."""
    rec = recording if isinstance(recording, Recording) else read_recording(recording)
    header = rec.header
    if factory is None:
        if header.factory is None:
            raise RecordingError(
                f"recording {rec.path!r} names no actor factory; pass factory=... to say how to build its actors"
            )
        factory = load_factory(header.factory)
    actors = list(factory(**header.params))
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
                if ended.ticks:
                    await session.wait_tick(ended.ticks - 1)
                assert ended.stamp is not None
                await session.clock.sleep_until(ended.stamp.time)
            elif expected:
                last = expected[-1].stamp
                assert last is not None
                await session.wait_tick(last.tick)
    except SessionFailed:
        pass  # the original may have failed the same way; the comparison below says whether it did

    compared = 0
    divergence = None
    for index, want in enumerate(expected):
        have = got[index] if index < len(got) else None
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
        extra = got[len(expected)]
        assert extra.stamp is not None
        divergence = Divergence(
            index=len(expected), tick=extra.stamp.tick, seq=extra.stamp.seq, expected="(nothing)", got=_line(extra)
        )
    return ReplayResult(
        path=rec.path, compared=compared, divergence=divergence, truncated=rec.truncated, problem=rec.problem
    )

