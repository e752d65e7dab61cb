"""OpenAI-style answers from one task's events: SSE chunks, or one collected body.

A streamed answer is ``data: <chunk json>`` lines then ``data: [DONE]``: a first
chat chunk with ``delta.role`` "assistant", one chunk per token (coalesced when
micro-batching is on), a final chunk with ``finish_reason``, and with
``stream_options.include_usage`` a last chunk with ``usage`` and no choices. A
task that fails, or is canceled on the server, ends with a ``data: {"error":
{...}}`` chunk then ``data: [DONE]`` (the openai package raises APIError on it),
never a silent stop. The constant parts of each chunk are built once per answer:
per token the path is one JSON encoding of the text and two byte joins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from app.api.openai.errors import canceled_error, error_body, event_error
from app.api.render import dumps, json_bytes
from app.api.sse import (
    SHUTDOWN_ERROR,
    LiveStreams,
    StreamOptions,
    next_event,
    release_stream,
)
from app.orchestrator.contracts import FinishReason
from app.orchestrator.errors import OrchError
from app.orchestrator.events import END, ERROR, STARTED, TERMINAL_KINDS, TOKEN, EndData, TaskEvent
from app.orchestrator.service import StreamHandle

DONE = b"data: [DONE]\n\n"
CANCELED_MESSAGE = canceled_error().message


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """Return OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _data(payload: Any) -> bytes:
    return b"data: " + dumps(payload).encode() + b"\n\n"


class ChunkRenderer:
    """The bytes of one streamed answer's chunks (chat or text completion)."""

    __slots__ = ("_chat", "_head", "_token_prefix", "_token_suffix", "_usage_tail")

    def __init__(
        self, *, chat: bool, completion_id: str, created: int, model: str, include_usage: bool
    ) -> None:
        self._chat = chat
        self._head: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
        }
        if chat:
            self._head["system_fingerprint"] = None
        self._usage_tail = include_usage
        head = dumps(self._head)[:-1]
        tail = ',"usage":null}' if include_usage else "}"
        if chat:
            prefix = f'data: {head},"choices":[{{"index":0,"delta":{{"content":'
            suffix = f'}},"logprobs":null,"finish_reason":null}}]{tail}\n\n'
        else:
            prefix = f'data: {head},"choices":[{{"index":0,"text":'
            suffix = f',"logprobs":null,"finish_reason":null}}]{tail}\n\n'
        self._token_prefix = prefix.encode()
        self._token_suffix = suffix.encode()

    def token(self, text: str) -> bytes:
        """Return the chunk carrying ``text`` (the per-token path). Never blocks."""
        return self._token_prefix + json_bytes(text) + self._token_suffix

    def extra(self, text: str, extra: Mapping[str, Any]) -> bytes:
        """Return the chunk of a token that carries tool-call fragments and/or logprobs."""
        delta: Any = text
        if self._chat:
            delta = {"content": text or None}
            if "tool_calls" in extra:
                delta["tool_calls"] = extra["tool_calls"]
        return self._chunk(delta, None, extra.get("logprobs"))

    def start(self) -> bytes:
        """Return the first chunk: ``delta.role`` "assistant" for chat, nothing otherwise."""
        if not self._chat:
            return b""
        return self._chunk({"role": "assistant", "content": ""}, None)

    def finish(self, reason: str, prompt_tokens: int, completion_tokens: int) -> bytes:
        """Return the final chunk, the usage chunk when asked for, and ``[DONE]``."""
        empty: dict[str, str] = {}
        out = self._chunk(empty if self._chat else "", reason)
        if self._usage_tail:
            out += _data(
                {**self._head, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
            )
        return out + DONE

    def error(self, message: str, code: str) -> bytes:
        """Return the error chunk and ``[DONE]``."""
        return _data(error_body(message, 500, code)) + DONE

    def _chunk(self, delta: Any, reason: str | None, logprobs: Any = None) -> bytes:
        choice: dict[str, Any] = {"index": 0}
        choice["delta" if self._chat else "text"] = delta
        choice["logprobs"] = logprobs
        choice["finish_reason"] = reason
        payload: dict[str, Any] = {**self._head, "choices": [choice]}
        if self._usage_tail:
            payload["usage"] = None
        return _data(payload)


class OpenAIFrames:
    """Renders one task's events as OpenAI chunks (see the module docstring); the
    SSE writer does the writing, heartbeats, micro-batching and disconnects."""

    __slots__ = ("_prompt_tokens", "_renderer")

    def __init__(self, renderer: ChunkRenderer, prompt_tokens: int) -> None:
        self._renderer = renderer
        self._prompt_tokens = prompt_tokens

    def render(self, event: TaskEvent) -> bytes:
        """Return the chunk bytes of ``event`` (b"" for events OpenAI has no chunk for)."""
        if event.kind == TOKEN:
            data = event.data
            if "x" in data:
                return self._renderer.extra(data["t"], data["x"])
            return self._renderer.token(data["t"])
        if event.kind == STARTED:
            return self._renderer.start()
        if event.kind == END:
            return self._finish(event.data)
        if event.kind == ERROR:
            return self._renderer.error(event.data["message"], event.data["code"])
        return b""

    def shutdown_bytes(self) -> bytes:
        """Return the error chunk of a server shutdown and ``[DONE]``."""
        return self._renderer.error(str(SHUTDOWN_ERROR["message"]), str(SHUTDOWN_ERROR["code"]))

    def _finish(self, data: EndData) -> bytes:
        if data["finish_reason"] == FinishReason.CANCELED:
            return self._renderer.error(CANCELED_MESSAGE, "canceled")
        return self._renderer.finish(data["finish_reason"], self._prompt_tokens, data["tokens_out"])


@dataclass(frozen=True, slots=True)
class Collected:
    """A finished task's whole answer."""

    text: str
    finish_reason: str
    tokens_out: int
    tool_calls: list[dict[str, Any]] | None = None
    logprobs: dict[str, Any] | None = None


class Extras:
    """Assembles a whole answer's tool calls (fragments merged per index) and logprobs."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}
        self.logprobs: dict[str, list[Any]] = {}

    def add(self, extra: Mapping[str, Any]) -> None:
        """Merge one token's ``tool_calls`` fragments and ``logprobs`` lists."""
        for fragment in extra.get("tool_calls") or ():
            call = self.calls.setdefault(
                int(fragment.get("index", 0)),
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            call["id"] = fragment.get("id") or call["id"]
            function = fragment.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""
        for key, items in (extra.get("logprobs") or {}).items():
            if isinstance(items, list):
                self.logprobs.setdefault(key, []).extend(items)

    def tool_calls(self) -> list[dict[str, Any]] | None:
        """Return the assembled calls in index order, None when there were none."""
        return [self.calls[i] for i in sorted(self.calls)] or None


async def collect(
    request: web.Request, handle: StreamHandle, streams: LiveStreams, options: StreamOptions
) -> Collected:
    """Read the task's events to the end while watching the client. Awaits the task.

    Returns the text and finish reason. Raises ConnectionResetError when the
    client went away (the task is then canceled or drained as for a stream),
    CancelledError when aiohttp cancels the handler (likewise), and OrchError
    when the task failed or was canceled on the server.
    """
    texts: list[str] = []
    extras = Extras()
    finished = False
    try:
        while True:
            try:
                event = await next_event(request, handle)
            except TimeoutError:
                continue
            if event is None or event.kind in TERMINAL_KINDS:
                finished = True
                return _outcome(event, texts, extras)
            if event.kind == TOKEN:
                texts.append(event.data["t"])
                if "x" in event.data:
                    extras.add(event.data["x"])
    finally:
        # a handler canceled by aiohttp also means the client went away
        release_stream(handle, streams, options, finished=finished)


def _outcome(event: TaskEvent | None, texts: list[str], extras: Extras) -> Collected:
    if event is None:
        raise OrchError("INTERNAL", "the task's stream ended without an outcome", status=500)
    if event.kind == ERROR:
        raise event_error(event.data)
    assert event.kind == END
    reason = event.data["finish_reason"]
    if reason == FinishReason.CANCELED:
        raise canceled_error()
    return Collected(
        "".join(texts),
        reason,
        int(event.data["tokens_out"]),
        extras.tool_calls(),
        extras.logprobs or None,
    )
