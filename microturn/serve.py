"""``microturn serve``: the local torch interaction model behind HTTP, speaking sglang's streaming-session protocol.

The same endpoints and rules as an sglang server started with ``--enable-streaming-session`` (shapes in
:mod:`microturn.model.sglang_wire`), so the sglang backend (:mod:`microturn.model.sglang`) runs against either:

* ``POST /open_session`` → a session id (JSON string). Only ``"streaming": true`` sessions (append-only);
  ``timeout`` frees the session after that many seconds idle.
* ``POST /generate`` (plain, or ``"stream": true`` as SSE ``data: {...}`` events ending with ``data: [DONE]``):
  appends ``input_ids`` (the client's :class:`~microturn.model.layout.TickEncoder` chunk, plus the ``media``
  field for its ``DMEL``/``PATCH`` positions) or ``text`` (UTF-8 bytes: the model's byte-level text) after the
  previous turn's last output token, which the server carries itself, and decodes up to ``max_new_tokens``
  (at most the model's K per tick; decoding stops early at END). ``meta_info.cached_tokens`` = the previous
  turn's prompt + completion. ``replace`` / ``offset`` / ``drop_previous_output`` are refused with 400, as is
  a second request while one is in flight. A failed or aborted turn is rolled back
  (:meth:`~microturn.model.kv_session.KVSession.rollback`): the next turn sees the session as if it never ran.
* ``POST /abort_request {"rid"} | {"abort_all": true}``, ``POST /close_session``, ``/flush_cache``,
  ``GET /health`` (JSON: sessions, per-session cache bytes), ``/get_model_info`` (adds ``outputs_per_tick``),
  ``POST /tokenize`` (byte-level).

Hardening (issue 15): bodies are capped (``Content-Length`` first, then as they stream: HTTP 413); every
number and id is range-checked (HTTP 400 naming the field and the value); open sessions are capped in number and
in cache memory (HTTP 503 with ``Retry-After``); every session has an idle timeout (a default when none is asked,
clamped to a maximum), so none outlives its client; a client that goes away at any point aborts its turn (rolled
back) and never takes the server down; an unexpected failure answers HTTP 500 with its cause and is logged with
its traceback. Freed caches are handed back to the OS (glibc's ``malloc_trim``; see :func:`release_memory`).
The limits are :class:`ServeLimits`.

Many sessions share one loaded model. Model steps run off the event loop (``trio.to_thread`` under a
``CapacityLimiter``) so ``/health`` and other sessions stay responsive. Every clock read goes through the
injectable ``clock`` (tests advance it instead of sleeping). Served by hypercorn on trio with starlette.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import errno
import math
import re
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio

from microturn.http_serving import open_hypercorn
from microturn.log import get_logger
from microturn.model.layout import DMEL, DMEL_BYTES, PATCH, PATCH_BYTES, EncodedTick, token_name
from microturn.model.sglang_wire import (
    AbortRequest,
    CloseSessionRequest,
    FinishReason,
    GenerateRequest,
    GenerateResponse,
    MetaInfo,
    OpenSessionRequest,
    TokenizeRequest,
    TokenizeResponse,
    decode_body,
)
from microturn.runtime import server_in_thread

__all__ = [
    "DEFAULT_PORT",
    "ModelServer",
    "RequestError",
    "ServeLimits",
    "default_checkpoint",
    "load_server_model",
    "open_server",
    "release_memory",
    "serve",
    "serve_in_thread",
]

DEFAULT_PORT = 30000
"""sglang's default port."""

MAX_PROMPT = 1 << 16
"""The most positions one turn may append."""

log = get_logger("microturn.serve")


class RequestError(ValueError):
    """A request the server refuses: answered with HTTP ``status`` (400 unless said) ``{"error": {"message":
    ...}}``, plus ``headers`` (``Retry-After`` on a 503)."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class ServeLimits:
    """What one server accepts. Every limit is a number so that no client can make the server hold unbounded
    memory or time: bodies (``max_body_bytes``), sessions (``max_sessions``, ``max_memory_bytes`` of caches),
    idle sessions (``idle_timeout`` when the client asks none, ``max_idle_timeout`` at most whatever it asks);
    ``retry_after`` is the ``Retry-After`` (seconds) of a 503; ``read_timeout`` drops a client that sends
    nothing for that long (hypercorn)."""

    max_body_bytes: int = 8 << 20
    max_sessions: int = 256
    max_memory_bytes: int = 4 << 30
    idle_timeout: float = 300.0
    max_idle_timeout: float = 3600.0
    retry_after: int = 1
    read_timeout: int = 30

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_sessions", "max_memory_bytes", "retry_after", "read_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer ≥ 1, got {value!r}")
        for name in ("idle_timeout", "max_idle_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected seconds > 0, got {value!r}")
        if self.idle_timeout > self.max_idle_timeout:
            raise ValueError(f"idle_timeout: expected at most max_idle_timeout={self.max_idle_timeout:g}, "
                             f"got {self.idle_timeout:g}")


MAX_CAPACITY = 1 << 30
"""The largest ``capacity_of_str_len`` accepted (sglang's own client sends 65536; microturn's 2**20)."""

TIMEOUT_RANGE = (1e-3, 1e9)
"""``/open_session`` ``timeout`` outside this (seconds) is refused; inside it is clamped to the max idle timeout."""

MAX_TEMPERATURE = 1e4
"""The largest temperature accepted (below 1e-6 sampling is greedy, as in sglang)."""

MAX_SEED = (1 << 63) - 1

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
ID_RULE = "1 to 128 characters from A-Z a-z 0-9 . _ : - (starting with a letter or digit)"


def _shown(value: Any, limit: int = 60) -> str:
    """A value as it appears in an error message: its repr, cut to ``limit`` characters (with its length)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return text[:limit - 3] + "..." + size


def _check_id(field_name: str, value: str) -> str:
    if not _ID.fullmatch(value):
        raise RequestError(f"{field_name}: expected {ID_RULE}, got {_shown(value)}")
    return value


def _check_int(field_name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{field_name}: expected an integer in [{low}, {high}], got {_shown(value)}")
    return value


_LIBC: Any = None


def release_memory() -> bool:
    """Hand freed heap memory back to the OS: glibc keeps freed blocks in its arenas (one per thread that
    allocated, the model's worker threads included), so a server whose sessions were closed would otherwise
    keep its peak RSS for ever. ``malloc_trim(0)`` returns the free pages of every arena; elsewhere than glibc
    this does nothing. True when it ran."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            _LIBC = libc if libc is not None and hasattr(libc, "malloc_trim") else False
        except OSError:
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True


class _Aborted(Exception):
    """Raised inside a model step (from the per-token callback) to end an aborted turn."""


def default_checkpoint() -> Path | None:
    """The checkpoint ``microturn serve`` loads when none is given: the shipped one ``microturn run`` uses by
    default. None when it is missing (a damaged install): the server then runs an UNTRAINED model and says so
    in a warning."""
    from microturn.model.weights import EMBEDDED_CHECKPOINT

    return EMBEDDED_CHECKPOINT if EMBEDDED_CHECKPOINT.is_file() else None


def load_server_model(checkpoint: str | Path | None = None, *, config: str = "embedded", device: str = "cpu",
                      untrained: bool = False) -> tuple[Any, str]:
    """The model to serve and a description of it: ``checkpoint`` (verified), else :func:`default_checkpoint`,
    else (or when ``untrained``) a randomly initialised model of preset ``config`` (with a warning: its outputs
    are noise; for tests and benchmarks)."""
    from microturn.assembly import BackendError, make_backend
    from microturn.model.config import PRESETS
    from microturn.model.local import LocalBackend

    if untrained and checkpoint is not None:
        raise ValueError("--checkpoint and --untrained exclude each other")
    path = None if untrained else checkpoint if checkpoint is not None else default_checkpoint()
    if path is not None:  # the registry's local backend: the same checks and errors as --model local:PATH
        try:
            backend = make_backend(f"local:{path}", {"device": device})
        except BackendError as exc:
            raise BackendError(exc.reason, key="--checkpoint", value=str(path)) from None
        assert isinstance(backend, LocalBackend)
        return backend.model, str(path)
    if config not in PRESETS:
        raise ValueError(f"config: expected one of {', '.join(sorted(PRESETS))}, got {config!r}")
    log.warning("serve_untrained_model", config=config,
                hint="serving an UNTRAINED model (random weights, seed 0): its outputs are noise")
    return LocalBackend.random(PRESETS[config](), seed=0, device=device).model, f"untrained:{config}"


@dataclass
class _Turn:
    rid: str
    abort: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Session:
    id: str
    kv: Any
    timeout: float
    last_active: float
    inflight: _Turn | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    turns: int = 0
    seeded: bool = False


def _render(tokens: list[int]) -> str:
    """Output ids as text: bytes as UTF-8, other tokens as ``<|NAME|>``."""
    out: list[str] = []
    run = bytearray()
    for t in tokens:
        if t < 256:
            run.append(t)
            continue
        if run:
            out.append(run.decode("utf-8", errors="replace"))
            run.clear()
        out.append(f"<|{token_name(t)}|>")
    if run:
        out.append(run.decode("utf-8", errors="replace"))
    return "".join(out)


def _split(chunk: EncodedTick, size: int) -> list[EncodedTick]:
    """Cut a chunk into pieces of at most ``size`` positions (each DMEL/PATCH position keeps its payload)."""
    pieces: list[EncodedTick] = []
    d = p = 0
    for start in range(0, len(chunk.tokens), size):
        tokens = chunk.tokens[start:start + size]
        nd, npatch = tokens.count(DMEL), tokens.count(PATCH)
        pieces.append(EncodedTick(tokens, chunk.dmel[d:d + nd], chunk.patches[p:p + npatch]))
        d, p = d + nd, p + npatch
    return pieces


def _b64(field_name: str, value: str, unit: int, what: str) -> list[bytes]:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{field_name}: expected base64, got {value[:40]!r}") from None
    if len(raw) % unit:
        raise RequestError(f"{field_name}: expected a multiple of {unit} bytes ({what}), got {len(raw)} bytes")
    return [raw[i:i + unit] for i in range(0, len(raw), unit)]


class ModelServer:
    """The state behind ``microturn serve``: one loaded model, its sessions, and the starlette app.

    ``clock`` (seconds, monotonic) is read for idle timeouts and latencies; ``workers`` bounds the model steps
    running at once (threads); ``step_hook(session_id, index)`` runs in the worker thread after each decoded
    token (tests use it to hold a turn in flight, deterministically)."""

    def __init__(self, model: Any, *, name: str = "microturn", clock: Callable[[], float] = time.monotonic,
                 workers: int = 1, step_hook: Callable[[str, int], None] | None = None,
                 reap_interval: float = 1.0, limits: ServeLimits | None = None) -> None:
        self.model = model
        self.cfg = model.cfg
        self.name = name
        self.clock = clock
        self.limiter = trio.CapacityLimiter(workers)
        self.step_hook = step_hook
        self.reap_interval = reap_interval
        self.limits = limits or ServeLimits()
        self.sessions: dict[str, _Session] = {}
        self.oneshots = 0
        """One-shot turns (no session) running now: they hold a cache too, so they count against the cap."""
        self.nursery: trio.Nursery | None = None
        self.requests = 0
        self.timed_out = 0
        self.refused_busy = 0
        self.internal_errors = 0
        self._freed = 0
        self.app = self._build_app()

    # --- sessions ------------------------------------------------------------------------------------------

    def reap(self) -> list[str]:
        """Free the sessions idle for longer than their timeout (never one with a turn in flight)."""
        now = self.clock()
        gone = [s.id for s in self.sessions.values() if s.inflight is None and now - s.last_active > s.timeout]
        for sid in gone:
            self._free(self.sessions.pop(sid))
            self.timed_out += 1
            log.info("session_timed_out", session=sid)
        return gone

    def _free(self, session: _Session) -> None:
        """Count a dropped session's cache; once enough is freed (or none is left), hand it back to the OS."""
        self._freed += session.kv.memory_bytes()
        if self._freed >= 16 << 20 or not self.sessions:
            self._freed = 0
            release_memory()

    async def _reaper(self) -> None:
        while True:
            await trio.sleep(self.reap_interval)
            self.reap()

    def stats(self) -> dict[str, Any]:
        """Sessions, turns in flight and cache memory (total and per session)."""
        per = {sid: s.kv.memory_bytes() for sid, s in self.sessions.items()}
        return {
            "status": "ok",
            "model": self.name,
            "sessions": len(self.sessions),
            "inflight": sum(s.inflight is not None for s in self.sessions.values()) + self.oneshots,
            "memory_bytes": sum(per.values()),
            "session_memory_bytes": per,
            "requests": self.requests,
            "timed_out": self.timed_out,
            "refused_busy": self.refused_busy,
            "internal_errors": self.internal_errors,
            "max_sessions": self.limits.max_sessions,
        }

    def _room(self) -> None:
        """Refuse (HTTP 503, ``Retry-After``) a new cache when the session cap or the memory cap is reached."""
        lim = self.limits
        busy = None
        if len(self.sessions) + self.oneshots >= lim.max_sessions:
            busy = f"{len(self.sessions) + self.oneshots} sessions are open, the most this server holds " \
                   f"(--max-sessions {lim.max_sessions})"
        else:
            used = sum(s.kv.memory_bytes() for s in self.sessions.values())
            if used >= lim.max_memory_bytes:
                busy = f"the open sessions hold {used} bytes of cache, the most this server holds " \
                       f"(--max-memory-bytes {lim.max_memory_bytes})"
        if busy is not None:
            self.refused_busy += 1
            log.warning("serve_busy", reason=busy)
            raise RequestError(f"server busy: {busy}; close a session or retry later", 503,
                               {"Retry-After": str(lim.retry_after)})

    def open_session(self, req: OpenSessionRequest) -> str:
        """Open a streaming session; returns its id. Its idle timeout is the one asked (clamped to
        ``limits.max_idle_timeout``), else ``limits.idle_timeout``."""
        from microturn.model.kv_session import KVSession

        if not req.streaming:
            raise RequestError("streaming: microturn serve has streaming sessions only (append-only); "
                               "open with \"streaming\": true, got false")
        _check_int("capacity_of_str_len", req.capacity_of_str_len, 1, MAX_CAPACITY)
        lim = self.limits
        if req.timeout is None:
            timeout = lim.idle_timeout
        else:
            low, high = TIMEOUT_RANGE
            if not (math.isfinite(req.timeout) and low <= req.timeout <= high):
                raise RequestError(f"timeout: expected seconds in [{low:g}, {high:g}] (or null), got {req.timeout!r}")
            timeout = min(req.timeout, lim.max_idle_timeout)
        if req.session_id is not None:
            _check_id("session_id", req.session_id)
        sid = req.session_id or uuid.uuid4().hex
        if sid in self.sessions:
            raise RequestError(f"session_id: {sid!r} is already open. Failed to open the session. "
                               "Check if a session with the same id is still open.")
        self.reap()
        self._room()
        self.sessions[sid] = _Session(sid, KVSession(self.model), timeout, self.clock())
        log.info("session_opened", session=sid, active=len(self.sessions), timeout=timeout)
        return sid

    def close_session(self, sid: str) -> None:
        """Free a session's cache (a turn in flight is aborted first)."""
        _check_id("session_id", sid)
        session = self.sessions.pop(sid, None)
        if session is None:
            raise RequestError(f"session_id: no open session {sid!r} (closed, timed out, or never opened)")
        if session.inflight is not None:
            session.inflight.abort.set()
        else:
            self._free(session)
        log.info("session_closed", session=sid, active=len(self.sessions))

    def abort(self, req: AbortRequest) -> int:
        """Abort the turn with id ``rid`` (or every turn in flight); returns how many were asked to stop."""
        if req.rid:
            _check_id("rid", req.rid)
        n = 0
        for s in self.sessions.values():
            if s.inflight is not None and (req.abort_all or s.inflight.rid == req.rid):
                s.inflight.abort.set()
                n += 1
        return n

    # --- turns ---------------------------------------------------------------------------------------------

    def _prepare(self, req: GenerateRequest) -> tuple[_Session | None, EncodedTick, int]:
        """Validate a /generate body: (session or None for a one-shot request, the chunk, max_new_tokens)."""
        sp = req.sampling_params
        k = self.cfg.outputs_per_tick
        if isinstance(sp.max_new_tokens, bool) or not 1 <= sp.max_new_tokens <= k:
            raise RequestError(f"sampling_params.max_new_tokens: expected 1..{k} (the model's outputs per tick), "
                               f"got {sp.max_new_tokens!r}")
        if not (math.isfinite(sp.temperature) and 0 <= sp.temperature <= MAX_TEMPERATURE):
            raise RequestError(f"sampling_params.temperature: expected a number in [0, {MAX_TEMPERATURE:g}], "
                               f"got {sp.temperature!r}")
        if sp.sampling_seed is not None:
            _check_int("sampling_params.sampling_seed", sp.sampling_seed, 0, MAX_SEED)
        if req.rid is not None:
            _check_id("rid", req.rid)
        if (req.input_ids is None) == (req.text is None):
            raise RequestError("input_ids / text: expected exactly one of them, got "
                               + ("both" if req.input_ids is not None else "neither"))
        session = None
        params = req.session_params
        if params is not None:
            _check_id("session_params.id", params.id)
            if isinstance(params.rid, str):
                _check_id("session_params.rid", params.rid)
            session = self.sessions.get(params.id)
            if session is None:
                raise RequestError(f"session_params.id: no open session {params.id!r} "
                                   "(closed, timed out, or never opened)")
            if params.replace:
                raise RequestError("session_params.replace: Streaming sessions do not support replace.")
            if params.drop_previous_output:
                raise RequestError("session_params.drop_previous_output: Streaming sessions do not support "
                                   "drop_previous_output.")
            if params.offset:
                raise RequestError(f"session_params.offset: Streaming sessions do not support offset "
                                   f"(got {params.offset}).")
            if session.inflight is not None:
                raise RequestError(f"session_params.id: Streaming session already has an active request "
                                   f"({session.inflight.rid!r}); one request in flight per session.")
        if req.text is not None:
            chunk = EncodedTick(list(req.text.encode("utf-8")))
            if req.media is not None and (req.media.dmel or req.media.patches):
                raise RequestError("media: only with input_ids (text has no DMEL/PATCH positions)")
        else:
            tokens = req.input_ids or []
            vocab = self.cfg.vocab_size
            for i, t in enumerate(tokens):
                if not 0 <= t < vocab:
                    raise RequestError(f"input_ids[{i}]: expected a token id in [0, {vocab}), got {t}")
            media = req.media
            dmel = _b64("media.dmel", media.dmel, DMEL_BYTES, "80 per dMel frame") if media and media.dmel else []
            patches = (_b64("media.patches", media.patches, PATCH_BYTES, "40x40x3 per patch")
                       if media and media.patches else [])
            n_dmel, n_patch = tokens.count(DMEL), tokens.count(PATCH)
            if len(dmel) != n_dmel:
                raise RequestError(f"media.dmel: input_ids has {n_dmel} DMEL positions, got {len(dmel)} frames")
            if len(patches) != n_patch:
                raise RequestError(f"media.patches: input_ids has {n_patch} PATCH positions, got {len(patches)} "
                                   "patches")
            chunk = EncodedTick(list(tokens), dmel, patches)
        if not chunk.tokens:
            raise RequestError("input_ids: expected at least one token, got none")
        if len(chunk.tokens) > MAX_PROMPT:
            raise RequestError(f"input_ids: expected at most {MAX_PROMPT} tokens in one turn, got {len(chunk.tokens)}")
        return session, chunk, sp.max_new_tokens

    def _step(self, session: _Session, turn: _Turn, chunk: EncodedTick, req: GenerateRequest,
              on_token: Callable[[int], None] | None) -> tuple[list[int], FinishReason]:
        """One turn on the worker thread; a failure or an abort rolls the session back."""
        kv = session.kv
        sp = req.sampling_params
        whole = len(chunk.tokens) + (kv.carry is not None)
        # A tick-sized turn is undone by a cheap rollback; a longer prompt (the text bridge's first turn) is
        # appended in pieces of at most max_chunk_tokens, and undone from a snapshot.
        small = whole <= self.cfg.max_chunk_tokens and whole + sp.max_new_tokens - 1 <= kv.rollback_room()
        mark = kv.mark() if small else kv.snapshot()
        hook = self.step_hook

        count = 0

        def each(token: int) -> None:
            nonlocal count
            if turn.abort.is_set():
                raise _Aborted
            if hook is not None:
                hook(session.id, count)
            count += 1
            if on_token is not None:
                on_token(token)
            if turn.abort.is_set():
                raise _Aborted

        kv.temperature = float(sp.temperature)
        if sp.sampling_seed is not None and not session.seeded:
            kv.generator.manual_seed(int(sp.sampling_seed))
            mark = kv.mark() if small else kv.snapshot()

        def undo() -> None:
            kv.rollback(mark) if small else kv.restore(mark)

        try:
            if turn.abort.is_set():
                raise _Aborted
            if not small:
                pieces = _split(EncodedTick(([kv.carry] if kv.carry is not None else []) + chunk.tokens,
                                            chunk.dmel, chunk.patches), self.cfg.max_chunk_tokens)
                kv.carry = None
                for piece in pieces[:-1]:
                    kv.append(piece)
                    if turn.abort.is_set():
                        raise _Aborted
                chunk = pieces[-1]
            tokens = kv.step_encoded(chunk, sp.max_new_tokens, each, stop_at_end=not sp.ignore_eos)
        except _Aborted:
            undo()
            return [], FinishReason(type="abort", message="Abort request: the turn was aborted and rolled back.")
        except BaseException:
            undo()
            raise
        session.seeded = True
        from microturn.model.layout import END

        if tokens and tokens[-1] == END and not sp.ignore_eos:
            return tokens, FinishReason(type="stop", matched=END)
        return tokens, FinishReason(type="length", length=len(tokens))

    async def _run(self, req: GenerateRequest, session: _Session, chunk: EncodedTick, rid: str,
                   on_token: Callable[[int], None] | None = None, turn: _Turn | None = None) -> GenerateResponse:
        started = self.clock()
        turn = turn or _Turn(rid)
        session.inflight = turn
        session.last_active = started
        try:
            tokens, finish = await trio.to_thread.run_sync(self._step, session, turn, chunk, req, on_token,
                                                           limiter=self.limiter)
        finally:
            session.inflight = None
            session.last_active = self.clock()
            if self.sessions.get(session.id) is not session:  # closed while it ran, or a one-shot turn
                self._free(session)
        cached = session.prompt_tokens + session.completion_tokens if session.turns else 0
        prompt = cached + len(chunk.tokens)
        if finish.type != "abort":
            session.prompt_tokens, session.completion_tokens = prompt, len(tokens)
            session.turns += 1
        meta = MetaInfo(id=rid, finish_reason=finish, prompt_tokens=prompt, completion_tokens=len(tokens),
                        cached_tokens=cached, e2e_latency=self.clock() - started)
        return GenerateResponse(text=_render(tokens), output_ids=tokens, meta_info=meta)

    def _claim(self, req: GenerateRequest) -> tuple[_Session, EncodedTick, _Turn, Callable[[], None]]:
        """Validate a turn and claim its session (a throwaway one for a one-shot request, counted against the
        cap): the session, the chunk, the turn, and what to call once it is over (whatever happens)."""
        from microturn.model.kv_session import KVSession

        session, chunk, _ = self._prepare(req)
        rid = req.rid or uuid.uuid4().hex
        turn = _Turn(rid)
        if session is not None:
            session.inflight = turn  # claimed now: a second request is refused from this moment
            return session, chunk, turn, lambda: None
        self._room()
        self.oneshots += 1
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self.oneshots -= 1

        return _Session(f"oneshot-{rid}", KVSession(self.model), 0.0, self.clock()), chunk, turn, release

    async def generate(self, req: GenerateRequest, abort: threading.Event | None = None) -> GenerateResponse:
        """Run one turn (a session's next tick, or a one-shot request without ``session_params``). Setting
        ``abort`` (the HTTP layer does when the client goes away) aborts the turn and rolls it back."""
        session, chunk, turn, release = self._claim(req)
        if abort is not None:
            turn.abort = abort
        try:
            return await self._run(req, session, chunk, turn.rid, turn=turn)
        finally:
            release()

    # --- HTTP ----------------------------------------------------------------------------------------------

    def _build_app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import ClientDisconnect, Request
        from starlette.responses import Response
        from starlette.routing import Route

        def json(obj: Any, status: int = 200) -> Response:
            return Response(msgspec.json.encode(obj), status_code=status, media_type="application/json")

        def error(message: str, status: int = 400, headers: dict[str, str] | None = None) -> Response:
            kind = {400: "BadRequest", 413: "PayloadTooLarge", 503: "ServiceUnavailable"}.get(status, "InternalError")
            return Response(msgspec.json.encode({"error": {"message": message, "type": kind, "code": status}}),
                            status_code=status, media_type="application/json", headers=headers)

        def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
            """Every refusal answers with its status; anything unexpected answers 500 naming its cause and is
            logged with its traceback; a client that went away gets nothing (nobody is listening)."""

            async def run(request: Request) -> Any:
                try:
                    return await handler(request)
                except RequestError as exc:
                    return error(str(exc), exc.status, exc.headers)
                except ClientDisconnect:
                    log.info("serve_client_gone", path=request.url.path, stage="request body")
                    return Response(status_code=400)
                except Exception as exc:  # the server outlives any request; the cause is logged
                    if isinstance(exc, ExceptionGroup) and len(_leaves(exc)) == 1:
                        exc = _leaves(exc)[0]  # type: ignore[assignment]  # a nursery's wrapping says nothing
                    self.internal_errors += 1
                    log.error("serve_internal_error", path=request.url.path, error=f"{type(exc).__name__}: {exc}",
                              exc_info=exc)
                    return error(f"internal error: {type(exc).__name__}: {exc}", 500)

            return run

        async def read(request: Request) -> bytes:
            """The body, refused (413) from its Content-Length when that is too large, else as it streams past
            the cap: an oversized body is never held whole."""
            cap = self.limits.max_body_bytes
            length = request.headers.get("content-length")
            if length is not None:
                if not (length.isdigit() and len(length) <= 20):
                    raise RequestError(f"Content-Length: expected a number of bytes, got {_shown(length)}")
                if int(length) > cap:
                    raise RequestError(f"body: {int(length)} bytes (Content-Length) is more than the "
                                       f"{cap} this server accepts (--max-body-bytes)", 413)
            parts: list[bytes] = []
            size = 0
            async for part in request.stream():
                size += len(part)
                if size > cap:
                    raise RequestError(f"body: more than the {cap} bytes this server accepts (--max-body-bytes)",
                                       413)
                parts.append(part)
            return b"".join(parts)

        async def body(request: Request, type_: type[Any], what: str) -> Any:
            self.requests += 1
            self.reap()
            data = await read(request)
            try:
                return decode_body(data or b"{}", type_, what)
            except ValueError as exc:
                raise RequestError(str(exc)) from None

        async def health(request: Request) -> Response:
            self.reap()
            return json(self.stats())

        async def model_info(request: Request) -> Response:
            cfg = self.cfg
            return json({"model_path": self.name, "tokenizer_path": None, "is_generation": True,
                         "outputs_per_tick": cfg.outputs_per_tick, "max_input_tokens": cfg.max_input_tokens,
                         "max_chunk_tokens": cfg.max_chunk_tokens,
                         "vocab_size": cfg.vocab_size, "microturn": True})

        async def open_session(request: Request) -> Response:
            return json(self.open_session(await body(request, OpenSessionRequest, "/open_session")))

        async def close_session(request: Request) -> Response:
            self.close_session((await body(request, CloseSessionRequest, "/close_session")).session_id)
            return Response(status_code=200)

        async def abort_request(request: Request) -> Response:
            self.abort(await body(request, AbortRequest, "/abort_request"))
            return Response(status_code=200)

        async def flush_cache(request: Request) -> Response:
            busy = sum(s.inflight is not None for s in self.sessions.values())
            if busy:
                return Response(f"Cache not flushed: {busy} requests are running.\n", status_code=400)
            release_memory()
            return Response("Cache flushed.\n", status_code=200)

        async def tokenize(request: Request) -> Response:
            req = await body(request, TokenizeRequest, "/tokenize")
            tokens = list(req.prompt.encode("utf-8"))
            return json(TokenizeResponse(tokens=tokens, count=len(tokens), max_model_len=self.cfg.max_chunk_tokens))

        async def generate(request: Request) -> Any:
            req = await body(request, GenerateRequest, "/generate")
            if req.stream:
                return self._stream(req)
            session, chunk, turn, release = self._claim(req)  # refusals are raised here, outside the nursery
            answers: list[GenerateResponse] = []
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_watch_disconnect, request.receive, turn.abort.set)
                    answers.append(await self._run(req, session, chunk, turn.rid, turn=turn))
                    nursery.cancel_scope.cancel()
            finally:
                release()
            reason = answers[0].meta_info.finish_reason
            if turn.abort.is_set() and reason is not None and reason.type == "abort":
                log.info("serve_client_gone", path="/generate", stage="turn", rid=turn.rid)
            return json(answers[0])

        routes = [
            Route("/health", guarded(health), methods=["GET"]),
            Route("/health_generate", guarded(health), methods=["GET"]),
            Route("/get_model_info", guarded(model_info), methods=["GET"]),
            Route("/open_session", guarded(open_session), methods=["GET", "POST"]),
            Route("/close_session", guarded(close_session), methods=["GET", "POST"]),
            Route("/abort_request", guarded(abort_request), methods=["POST"]),
            Route("/flush_cache", guarded(flush_cache), methods=["GET", "POST"]),
            Route("/tokenize", guarded(tokenize), methods=["POST"]),
            Route("/generate", guarded(generate), methods=["POST", "PUT"]),
        ]
        return Starlette(routes=routes)

    def _stream(self, req: GenerateRequest) -> _EventStream:
        """A streamed turn: one SSE event per decoded token (cumulative text and ids), then the final answer and
        ``data: [DONE]``. The turn runs in the server's nursery; a client that goes away, at any point, aborts it
        (rolled back), and nothing it left behind can fail the server."""
        if self.nursery is None:
            raise RequestError("stream: this server was started without a nursery (use open_server)")
        session, chunk, turn, release = self._claim(req)
        rid = turn.rid
        send, recv = trio.open_memory_channel[tuple[str, Any]](math.inf)
        token = trio.lowlevel.current_trio_token()

        def on_token(t: int) -> None:
            try:
                trio.from_thread.run_sync(send.send_nowait, ("token", t), trio_token=token)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.RunFinishedError):
                turn.abort.set()  # nobody reads the events any more: stop decoding for them

        async def run() -> None:
            try:
                async with send:
                    try:
                        result: tuple[str, Any] = ("done", await self._run(req, session, chunk, rid, on_token, turn))
                    except RequestError as exc:
                        result = ("error", str(exc))
                    except Exception as exc:  # reported to the client as an error event, and logged
                        self.internal_errors += 1
                        log.error("serve_internal_error", path="/generate", stream=True, rid=rid,
                                  error=f"{type(exc).__name__}: {exc}", exc_info=exc)
                        result = ("error", f"internal error: {type(exc).__name__}: {exc}")
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        send.send_nowait(result)  # the client may have gone: then nobody wants it
            finally:
                release()

        self.nursery.start_soon(run)
        cached = session.prompt_tokens + session.completion_tokens if session.turns else 0

        async def events() -> AsyncIterator[bytes]:
            ids: list[int] = []
            async with recv:
                async for kind, payload in recv:
                    if kind == "token":
                        ids.append(payload)
                        meta = MetaInfo(id=rid, prompt_tokens=cached + len(chunk.tokens),
                                        completion_tokens=len(ids), cached_tokens=cached)
                        event = GenerateResponse(text=_render(ids), output_ids=list(ids), meta_info=meta)
                    elif kind == "done":
                        event = payload
                    else:
                        event = {"error": {"message": payload}}
                    yield b"data: " + msgspec.json.encode(event) + b"\n\n"
            yield b"data: [DONE]\n\n"

        def gone(stage: str) -> None:
            turn.abort.set()  # harmless once the turn is over
            recv.close()  # the turn's events now go nowhere; its sender is told so and stops
            log.info("serve_client_gone", path="/generate", stage=stage, rid=rid)

        return _EventStream(events(), gone)


async def _watch_disconnect(receive: Callable[[], Any], on_gone: Callable[[], None]) -> None:
    """Wait for the ASGI ``http.disconnect`` (the client went away), then call ``on_gone``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            on_gone()
            return


class _EventStream:
    """An ASGI SSE response that always learns how it ended: ``gone(stage)`` runs when the client went away
    (or sending failed) before the last event was sent, whether or not the body had started; the events
    generator is closed in every case."""

    def __init__(self, events: Any, gone: Callable[[str], None]) -> None:
        self.events = events
        self.gone = gone

    async def __call__(self, scope: Any, receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        finished = False
        stage = "before the first event"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope.cancel)
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                                        (b"cache-control", b"no-cache")]})
                async for part in self.events:
                    stage = "mid-stream"
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                finished = True
                nursery.cancel_scope.cancel()
        except* OSError:  # the transport failed under a send: the client is gone
            pass
        finally:
            if not finished:
                self.gone(stage)
            with trio.CancelScope(shield=True):
                await self.events.aclose()


@contextlib.asynccontextmanager
async def open_server(server: ModelServer, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> AsyncIterator[str]:
    """Serve ``server`` with hypercorn on trio while the block runs; yields the base URL (``port=0`` picks a free
    port). Leaving the block shuts the server down gracefully."""
    reaper = trio.CancelScope()

    async def reap() -> None:
        with reaper:
            await server._reaper()

    async with trio.open_nursery() as nursery:
        server.nursery = nursery
        nursery.start_soon(reap)
        try:
            # a client that stalls mid-request is dropped, not waited on
            async with open_hypercorn(server.app, host, port, read_timeout=server.limits.read_timeout) as url:
                log.info("serve_listening", url=url, model=server.name)
                yield url
        finally:
            reaper.cancel()
            server.nursery = None


@contextlib.contextmanager
def serve_in_thread(server: ModelServer, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``server`` in a background thread with its own trio loop (real clock) while the block runs; yields
    the base URL. For tests and benchmarks whose own trio run uses a MockClock (lockstep scenarios)."""
    with server_in_thread(lambda: open_server(server, host, port), name="microturn serve") as url:
        yield url

def serve(checkpoint: str | Path | None = None, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          config: str = "embedded", workers: int = 1, threads: int | None = 1, untrained: bool = False,
          limits: ServeLimits | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Load the model and serve it until SIGINT (Ctrl-C) or SIGTERM, then shut down gracefully (``microturn
    serve``; main thread only). ``on_ready(url)`` is called once listening; ``threads`` sets torch's intra-op
    threads (None leaves it); ``limits`` are the :class:`ServeLimits` (defaults when None)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    model, name = load_server_model(checkpoint, config=config, untrained=untrained)
    server = ModelServer(model, name=name, workers=workers, limits=limits)

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with open_server(server, host, port) as url:
                if on_ready is not None:
                    on_ready(url)
                async for signum in signals:  # Ctrl-C or SIGTERM: a graceful shutdown
                    log.info("serve_stopping", signal=signal.Signals(signum).name)
                    break

    try:
        trio.run(main)
    except BaseExceptionGroup as group:  # one failure (a port in use) raises as itself, not wrapped
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise _with_address(leaves[0], host, port) from None
        raise
    except OSError as exc:
        raise _with_address(exc, host, port) from None


def _with_address(exc: BaseException, host: str, port: int) -> BaseException:
    """A bind failure says which address it could not take (``[Errno 98] Address already in use`` alone does not)."""
    if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
        return OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}"
                                  + (" (another server runs there? choose --port)" if exc.errno == errno.EADDRINUSE
                                     else ""))
    return exc


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out
