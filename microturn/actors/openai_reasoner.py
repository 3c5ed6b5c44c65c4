"""An OpenAI-compatible chat-completions client over httpx, streaming, with tool calling: the background
reasoner's backend for an sglang or vLLM server or any such endpoint.

Configured by constructor or the environment (``MICROTURN_REASONER_URL`` / ``OPENAI_BASE_URL``, ``..._MODEL``,
``..._API_KEY``). The API key goes only into the ``Authorization`` header: it is never logged, never put in a
message, and never shown by ``repr``. Whatever the server sends back — error texts, the answer, tool-call
names and arguments — is redacted before it goes anywhere: any piece of the key of 8 characters or more, in any
case (:mod:`microturn.redaction`), so an echo lower-cased or cut short is caught too; log events mask it as well.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from microturn.messages import ContextPackage, Delegate
from microturn.redaction import Redactor, register_secret
from microturn.tools.errors import short_repr

from .reasoner_api import REASONER_ENV, ReasonerError, TaskIO

__all__ = ["SYSTEM_PROMPT", "OpenAIChatReasoner"]


class _FunctionDelta(msgspec.Struct, kw_only=True):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct, kw_only=True):
    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct, kw_only=True):
    role: str | None = None
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _Choice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: _Delta = msgspec.field(default_factory=_Delta)
    finish_reason: str | None = None


class _Chunk(msgspec.Struct, kw_only=True):
    choices: list[_Choice] = []
    error: Any = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)


class _PendingCall(msgspec.Struct, kw_only=True):
    id: str
    name: str = ""
    arguments: str = ""


class _Secret:
    """A value that never shows itself: ``repr`` and ``str`` print ``***`` (so logging an object that holds
    one, or its ``vars()``, cannot leak it); :meth:`reveal` gives it to the one place that needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself (only for the request header)."""
        return self._value

    def __repr__(self) -> str:
        return "<secret ***>"

    __str__ = __repr__


SYSTEM_PROMPT = (
    "You are the background reasoner of a real-time voice assistant. The assistant handed you a task while it "
    "keeps talking with the user. Answer in one to three short sentences that can be spoken aloud. Use the "
    "tools when they help; never invent a tool result."
)


class OpenAIChatReasoner:
    """A streaming OpenAI-compatible chat-completions client with tool calling.

    ``base_url`` is the server root or its ``/v1`` (``http://localhost:30000`` and
    ``http://localhost:30000/v1`` both work). ``timeout`` bounds each read (a server that never answers fails
    the task after it), ``connect_timeout`` the connection; ``max_rounds`` bounds tool-calling rounds. The
    httpx timeouts run on trio's clock: use this backend in realtime sessions."""

    name = "openai-chat"

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_rounds: int = 4,
        temperature: float = 0.0,
        system_prompt: str = SYSTEM_PROMPT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"OpenAIChatReasoner(base_url=...) must be an http(s) URL, got {base_url!r}")
        if max_rounds < 1:
            raise ValueError(f"OpenAIChatReasoner(max_rounds=...) must be >= 1, got {max_rounds!r}")
        root = base_url.rstrip("/")
        self.url = f"{root}/chat/completions" if root.endswith("/v1") else f"{root}/v1/chat/completions"
        self.model = model
        self._key = _Secret(api_key) if api_key else None
        self._redactor = Redactor([api_key] if api_key else [])
        if api_key:
            register_secret(api_key)  # log events mask it too, whoever logs it
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_rounds = max_rounds
        self.temperature = temperature
        self.system_prompt = system_prompt
        self._transport = transport

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> OpenAIChatReasoner | None:
        """The client configured by the environment (see :data:`REASONER_ENV`), or None when no URL is set."""
        env = os.environ if env is None else env

        def first(key: str) -> str | None:
            return next((env[v] for v in REASONER_ENV[key] if env.get(v)), None)

        url = first("url")
        if url is None:
            return None
        return cls(url, first("model") or "default", first("api_key"), **kwargs)

    @property
    def has_key(self) -> bool:
        """Whether an API key is configured (the key itself is never exposed)."""
        return self._key is not None

    def __repr__(self) -> str:
        return f"OpenAIChatReasoner(url={self.url!r}, model={self.model!r}, api_key={'set' if self._key else 'none'})"

    def _redact(self, text: str) -> str:
        return self._redactor(text)

    def messages(self, task: Delegate) -> list[dict[str, Any]]:
        """The chat messages for a task: the system prompt with the context package, then the goal."""
        context: ContextPackage = task.context
        parts = [self.system_prompt]
        if context.dialog_state:
            parts.append(f"Dialog state: {context.dialog_state}")
        if context.transcript:
            lines = "\n".join(f"[tick {t.tick}] {t.speaker}: {t.text}" for t in context.transcript)
            parts.append(f"Conversation so far:\n{lines}")
        if context.heard:
            heard = "\n".join(f"- {h}" for h in context.heard)
            parts.append(f"What the user actually heard of the assistant (the truth after interruptions):\n{heard}")
        return [{"role": "system", "content": "\n\n".join(parts)}, {"role": "user", "content": task.goal}]

    async def solve(self, task: Delegate, io: TaskIO) -> str:
        """Chat until the model answers without calling tools (at most ``max_rounds`` rounds)."""
        messages = self.messages(task)
        specs = io.tools.specs()
        timeout = httpx.Timeout(self.timeout, connect=self.connect_timeout)
        try:
            async with httpx.AsyncClient(timeout=timeout, transport=self._transport) as client:
                for round_no in range(1, self.max_rounds + 1):
                    await io.progress("thinking…" if round_no == 1 else "reading the tool results…")
                    text, calls = await self._exchange(client, messages, specs)
                    text = self._redact(text)  # an answer that echoes the key is spoken and recorded
                    for call in calls:  # tool calls are published and recorded, and their arguments used
                        call.name, call.arguments = self._redact(call.name), self._redact(call.arguments)
                    if not calls:
                        if not text.strip():
                            raise ReasonerError("the reasoner endpoint returned an empty answer")
                        return text.strip()
                    messages.append(
                        {
                            "role": "assistant",
                            "content": text or None,
                            "tool_calls": [
                                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                for c in calls
                            ],
                        }
                    )
                    for call in calls:
                        await io.progress(f"calling {call.name}…")
                        content = await self._run_tool(call, io)
                        messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        except httpx.TimeoutException:
            raise ReasonerError(
                f"the reasoner endpoint {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except httpx.ConnectError as exc:
            raise ReasonerError(self._redact(f"cannot reach the reasoner endpoint {self.url}: {exc}")) from None
        except httpx.HTTPError as exc:  # a connection dropped mid-stream, a protocol error
            raise ReasonerError(
                self._redact(f"the reasoner's stream broke off: {type(exc).__name__}: {exc}")
            ) from None
        raise ReasonerError(f"no final answer after {self.max_rounds} rounds of tool calls")

    async def complete(self, messages: list[dict[str, Any]]) -> str:
        """One chat completion without tools: the answer's text (what the scenario judge asks). Raises
        :class:`ReasonerError` as :meth:`solve` does, with the key redacted."""
        timeout = httpx.Timeout(self.timeout, connect=self.connect_timeout)
        try:
            async with httpx.AsyncClient(timeout=timeout, transport=self._transport) as client:
                text, _ = await self._exchange(client, messages, [])
        except httpx.TimeoutException:
            raise ReasonerError(f"the endpoint {self.url} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            detail = f"cannot use the endpoint {self.url}: {type(exc).__name__}: {exc}"
            raise ReasonerError(self._redact(detail)) from None
        if not text.strip():
            raise ReasonerError("the endpoint returned an empty answer")
        return self._redact(text.strip())  # a judge's reason goes into a recording: never the key

    async def _exchange(
        self, client: httpx.AsyncClient, messages: list[dict[str, Any]], specs: list[dict[str, Any]]
    ) -> tuple[str, list[_PendingCall]]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "temperature": self.temperature,
        }
        if specs:
            body["tools"] = specs
            body["tool_choice"] = "auto"
        headers = {"Accept": "text/event-stream"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key.reveal()}"  # the one place the key is used
        async with client.stream("POST", self.url, json=body, headers=headers) as response:
            if response.status_code != 200:
                raw = b""
                async for piece in response.aiter_bytes():
                    raw += piece
                    if len(raw) > 4096:
                        break
                detail = _error_detail(raw)
                raise ReasonerError(
                    self._redact(f"the reasoner endpoint answered HTTP {response.status_code}: {detail}")
                )
            return await self._read_stream(response)

    async def _read_stream(self, response: httpx.Response) -> tuple[str, list[_PendingCall]]:
        """Accumulate the SSE stream: content deltas, and tool-call deltas (id, name and argument fragments)
        by index. OpenAI-format streams use only ``data:`` lines, so the few lines of parsing here replace an
        SSE library."""
        content: list[str] = []
        calls: dict[int, _PendingCall] = {}
        last_index: int | None = None
        finished = False
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, ": keep-alive" comments, event:/id: fields
            data = line[5:].strip()
            if data == "[DONE]":
                finished = True
                break
            try:
                chunk = _chunk_decoder.decode(data)
            except msgspec.DecodeError as exc:
                raise ReasonerError(
                    self._redact(f"malformed chunk in the reasoner's stream ({exc}): {short_repr(data, 120)}")
                ) from None
            if chunk.error is not None:
                detail = chunk.error.get("message", chunk.error) if isinstance(chunk.error, dict) else chunk.error
                raise ReasonerError(self._redact(f"the reasoner endpoint failed mid-stream: {detail}"))
            for choice in chunk.choices:
                if choice.index != 0:
                    continue  # n > 1 is never requested; ignore any extra choices
                delta = choice.delta
                if delta.content:
                    content.append(delta.content)
                for part in delta.tool_calls or ():
                    if part.index is not None:
                        index = part.index
                    elif part.id is not None and all(c.id != part.id for c in calls.values()):
                        index = len(calls)  # a server that omits the index: a new id is a new call
                    else:
                        index = last_index if last_index is not None else 0
                    last_index = index
                    call = calls.get(index)
                    if call is None:
                        call = calls[index] = _PendingCall(id=part.id or f"call_{index}")
                    elif part.id:
                        call.id = part.id
                    if part.function is not None:
                        call.name += part.function.name or ""
                        call.arguments += part.function.arguments or ""
                if choice.finish_reason:
                    finished = True
        if not finished:
            raise ReasonerError("the reasoner's stream broke off before it finished (no finish_reason, no [DONE])")
        return "".join(content), [calls[i] for i in sorted(calls)]

    async def _run_tool(self, call: _PendingCall, io: TaskIO) -> str:
        """Run one requested tool; the tool message's content is JSON ``{"ok", "value" | "error"}``. Bad
        arguments are reported back to the model (it may correct them), not raised."""
        try:
            args = msgspec.json.decode(call.arguments or "{}")
        except msgspec.DecodeError as exc:
            return _json({"ok": False, "error": f"arguments of {call.name!r} are not valid JSON: {exc}"})
        result = await io.call_tool(call.name, args)  # a non-object is refused by validation, with a message
        if result.ok:
            return _json({"ok": True, "value": result.value})
        return _json({"ok": False, "error": result.error})


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _error_detail(raw: bytes) -> str:
    try:
        parsed = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return short_repr(raw.decode("utf-8", errors="replace"), 200)
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        return short_repr(error, 200)
    return short_repr(parsed, 200)
