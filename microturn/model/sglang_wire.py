"""The request and response bodies of sglang's streaming-session HTTP protocol, as msgspec Structs (torch-free).

Both sides use them: the sglang client backend (:mod:`microturn.model.sglang`) and ``microturn serve``
(:mod:`microturn.serve`). The shapes follow sglang ≥ 0.5.10 (``python/sglang/srt/entrypoints/http_server.py``,
``managers/io_struct.py``, ``session/session_controller.py``):

* ``POST /open_session {"capacity_of_str_len", "streaming": true, "timeout"}`` → the session id, a JSON string;
* ``POST /generate {"input_ids" | "text", "session_params": {"id", "rid"}, "sampling_params": {...}, "rid",
  "stream"}`` → ``{"text", "output_ids", "meta_info": {"id", "finish_reason", "prompt_tokens",
  "completion_tokens", "cached_tokens"}}``; streamed as SSE ``data: {...}`` lines ending with ``data: [DONE]``;
* ``POST /close_session {"session_id"}``, ``POST /abort_request {"rid", "abort_all"}``;
* errors: HTTP 400 ``{"error": {"message": ...}}``; an aborted turn answers 200 with
  ``meta_info.finish_reason = {"type": "abort", "message": ...}``.

One field is microturn's own: ``media`` carries the dMel frames and image patches of the ``DMEL`` / ``PATCH``
placeholder positions of ``input_ids`` (base64 of the raw uint8 bytes, 80 bytes per frame and 40x40x3 per
patch, in order). sglang itself never sees it: the text bridge sends ``text`` instead.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

__all__ = [
    "AbortRequest",
    "CloseSessionRequest",
    "ErrorBody",
    "ErrorDetail",
    "FinishReason",
    "GenerateRequest",
    "GenerateResponse",
    "Media",
    "MetaInfo",
    "OpenSessionRequest",
    "SamplingParams",
    "SessionParams",
    "TokenizeRequest",
    "TokenizeResponse",
    "decode_body",
]


class OpenSessionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """``/open_session``: sglang needs ``capacity_of_str_len``; ``streaming`` makes the session append-only."""

    capacity_of_str_len: int = 65536
    session_id: str | None = None
    streaming: bool = False
    timeout: float | None = None
    """Seconds of idleness after which the server frees the session (None: never)."""


class CloseSessionRequest(msgspec.Struct, kw_only=True):
    """``/close_session``."""

    session_id: str


class AbortRequest(msgspec.Struct, kw_only=True):
    """``/abort_request``: one request by id, or all of them."""

    rid: str = ""
    abort_all: bool = False


class SessionParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``session_params`` of a ``/generate``: which session, and the previous turn's id (``rid``: sent as null
    on the first turn). ``replace``, ``offset`` and ``drop_previous_output`` rewrite history: streaming sessions
    refuse them."""

    id: str
    rid: str | None | msgspec.UnsetType = msgspec.UNSET
    offset: int | None = None
    replace: bool | None = None
    drop_previous_output: bool | None = None


class SamplingParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The ``sampling_params`` microturn sends (docs/design.md §7). ``max_new_tokens`` defaults to 128 as in sglang:
    always send it. ``sampling_seed`` seeds sampling when ``temperature > 0``."""

    max_new_tokens: int = 128
    temperature: float = 1.0
    ignore_eos: bool = False
    no_stop_trim: bool = False
    skip_special_tokens: bool = True
    sampling_seed: int | None = None


class Media(msgspec.Struct, kw_only=True, omit_defaults=True):
    """microturn's extra ``/generate`` field: base64 of the uint8 dMel frames (80 bytes each) and image patches
    (40x40x3 bytes each) of the ``DMEL`` / ``PATCH`` positions of ``input_ids``, in order."""

    dmel: str = ""
    patches: str = ""


class GenerateRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A ``/generate`` body (the fields microturn uses; exactly one of ``input_ids`` and ``text``)."""

    input_ids: list[int] | None = None
    text: str | None = None
    sampling_params: SamplingParams = msgspec.field(default_factory=SamplingParams)
    session_params: SessionParams | None = None
    rid: str | None = None
    stream: bool = False
    media: Media | None = None


class FinishReason(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Why a turn ended: ``length`` (max_new_tokens reached), ``stop`` (a stop token, ``matched``), or
    ``abort`` (the turn was aborted or failed; the session rolled back to its last good turn)."""

    type: str
    length: int | None = None
    matched: int | str | None = None
    message: str | None = None


class MetaInfo(msgspec.Struct, kw_only=True):
    """``meta_info`` of a ``/generate`` answer. ``prompt_tokens`` counts the whole sequence the turn extended
    (previous turns included); ``cached_tokens`` = the previous turn's prompt plus completion."""

    id: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    e2e_latency: float | None = None
    """Seconds the server spent on the request (microturn serve; sglang reports it too)."""


class GenerateResponse(msgspec.Struct, kw_only=True):
    """A ``/generate`` answer (or one streamed event: cumulative ``text`` and ``output_ids``)."""

    text: str = ""
    output_ids: list[int] = []
    meta_info: MetaInfo


class ErrorDetail(msgspec.Struct, kw_only=True):
    """The ``error`` of an error body."""

    message: str
    type: str | None = None
    code: int | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """An HTTP 400 body: ``{"error": {"message": ...}}``."""

    error: ErrorDetail


class TokenizeRequest(msgspec.Struct, kw_only=True):
    """sglang's ``/tokenize`` (OpenAI-style): ``{"prompt", "add_special_tokens"}``."""

    prompt: str
    model: str = "default"
    add_special_tokens: bool = True


class TokenizeResponse(msgspec.Struct, kw_only=True):
    """``/tokenize``'s answer."""

    tokens: list[int]
    count: int
    max_model_len: int


_PATH = re.compile(r"at `\$((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)`")


def _value_at(raw: Any, path: str) -> tuple[bool, Any]:
    for part in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", path):
        key, index = part
        try:
            raw = raw[key] if key else raw[int(index)]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, raw


def decode_body(data: bytes, type_: type[Any], what: str) -> Any:
    """Decode a JSON body into ``type_``; a bad body raises ``ValueError`` naming the field and the value,
    e.g. ``/generate: Expected `int`, got `str` - at `$.sampling_params.max_new_tokens` (got 'eight')``."""
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _PATH.search(message)
        if match:
            try:
                found, value = _value_at(msgspec.json.decode(data), match.group(1))
            except msgspec.DecodeError:
                found = False
            if found:
                shown = repr(value)
                message += f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
        raise ValueError(f"{what}: {message}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"{what}: the body is not valid JSON ({exc})") from None
