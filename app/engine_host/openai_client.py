"""Reading engines' streaming answers: one SSE decoder and one EngineStream.

Engines that speak the OpenAI API (llama.cpp's servers, vLLM, Ollama, LM
Studio, another llama-orch) stream ``data: {json}`` Server-Sent Events ending
with ``data: [DONE]``. ``SseDecoder`` turns arbitrary byte chunks into events;
``OpenAIStream`` turns events into token texts and maps every failure onto
the error taxonomy. The per-token path does one JSON decode (orjson) and no logging.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import aiohttp
import orjson

from app.orchestrator.contracts import ErrorCode
from app.orchestrator.ports import Delta, EngineError, EngineRequest

_LINE_END = re.compile(r"\r\n|\r|\n")
_MAX_MESSAGE = 300
_MAX_ERROR_BODY = 16 * 1024
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_-]{8,})")


class SseEvent(NamedTuple):
    """One dispatched event: its type ("message" unless named) and its data."""

    event: str
    data: str


MAX_LINE_CHARS = 4 * 1024 * 1024
"""The longest line (and event) an engine may send; longer fails that one stream."""


class SseLineTooLong(ValueError):
    """An engine sent a line or an event longer than ``MAX_LINE_CHARS``."""


class SseDecoder:
    """Incremental Server-Sent Events decoder (WHATWG rules, UTF-8).

    Feed it byte chunks cut anywhere, even inside a UTF-8 sequence or between
    ``\\r`` and ``\\n``; it returns the events completed so far. Comments and
    ``id``/``retry`` fields are ignored. Work is linear in the bytes fed: an
    unfinished line is kept as a list of pieces, joined once when it ends.
    Raises SseLineTooLong past ``max_line`` characters in one line or event.
    Not thread-safe; never blocks.
    """

    def __init__(self, max_line: int = MAX_LINE_CHARS) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max = max_line
        self._parts: list[str] = []  # the unfinished last line, in pieces
        self._held = 0
        self._cr = False  # the held text ends with "\\r" (a "\\n" may follow)
        self._data: list[str] = []
        self._data_chars = 0
        self._event = ""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Decode ``chunk``; return the events it completed (possibly none).

        Raises SseLineTooLong when a line or an event grows past the cap.
        """
        text = self._utf8.decode(chunk)
        if self._parts:
            if not self._cr and "\n" not in text and "\r" not in text:
                self._hold(text)  # a long line goes on: no rescan of what came before
                return []
            text = "".join(self._parts) + text
            self._parts.clear()
            self._held = 0
        events: list[SseEvent] = []
        if "\r" not in text:  # the common case: "\n" line ends only
            *lines, rest = text.split("\n")
            for line in lines:
                self._line(line, events)
        else:
            pos = 0
            for match in _LINE_END.finditer(text):
                if match.group() == "\r" and match.end() == len(text):
                    break  # a "\n" may follow in the next chunk
                self._line(text[pos : match.start()], events)
                pos = match.end()
            rest = text[pos:]
        self._hold(rest)
        return events

    def close(self) -> list[SseEvent]:
        """End of stream: return a last event whose blank line never came, if any."""
        text = "".join(self._parts) + self._utf8.decode(b"", final=True)
        self._parts.clear()
        self._held = 0
        events: list[SseEvent] = []
        for line in _LINE_END.split(text):
            self._line(line, events)
        self._line("", events)
        return events

    def _hold(self, text: str) -> None:
        if not text:
            return
        self._parts.append(text)
        self._held += len(text)
        self._cr = text[-1] == "\r"
        if self._held > self._max:
            self._parts.clear()
            raise SseLineTooLong(f"a stream line is longer than {self._max} characters")

    def _line(self, line: str, events: list[SseEvent]) -> None:
        if not line:
            if self._data:
                events.append(SseEvent(self._event or "message", "\n".join(self._data)))
            self._data = []
            self._data_chars = 0
            self._event = ""
            return
        if line[0] == ":":
            return
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data_chars += len(value)
            if self._data_chars > self._max:
                self._data = []
                raise SseLineTooLong(f"a stream event is longer than {self._max} characters")
            self._data.append(value)
        elif field == "event":
            self._event = value


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """Return ``text`` without the given secrets, bearer tokens or key-like words, shortened."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    text = _KEYLIKE.sub("***", text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"


def error_code_for_status(status: int) -> tuple[ErrorCode, bool]:
    """Return the taxonomy code and retriability for an engine's HTTP error status."""
    if status in (400, 404, 413, 422):
        return ErrorCode.INVALID_PARAMS, False
    if status in (408, 504):
        return ErrorCode.DECODE_TIMEOUT, True
    if status in (429, 503):
        return ErrorCode.POOL_UNAVAILABLE, True
    if status in (502,):
        return ErrorCode.WORKER_RESET, True
    return ErrorCode.INTERNAL, False


def engine_error_message(body: Any) -> str:
    """Return the message of an OpenAI-style error body (``{"error": ...}``), or ""."""
    if not isinstance(body, Mapping):
        return ""
    err = body.get("error", body)
    if isinstance(err, Mapping):
        return str(err.get("message") or err.get("detail") or err.get("type") or "")
    if isinstance(err, str):
        return err
    return str(body.get("detail") or "")


def _error_from_object(obj: Mapping[str, Any], name: str, secrets: Sequence[str]) -> EngineError:
    err = obj.get("error")
    code = ErrorCode.INTERNAL
    retriable = False
    if isinstance(err, Mapping) and isinstance(err.get("code"), int):
        code, retriable = error_code_for_status(err["code"])
    message = redact(engine_error_message(obj) or "unknown error", secrets)
    return EngineError(code, f"{name} reported an error mid-stream: {message}", retriable=retriable)


async def raise_for_status(
    response: aiohttp.ClientResponse, *, name: str, secrets: Sequence[str] = ()
) -> None:
    """Raise EngineError (and close ``response``) when its HTTP status is >= 400.

    The message names the engine and status and carries the engine's own
    message with secrets removed. Returns None for a success status. Reads
    at most 16 KiB of an error body.
    """
    if response.status < 400:
        return
    try:
        raw = await response.content.read(_MAX_ERROR_BODY)
    except (aiohttp.ClientError, OSError):
        raw = b""
    finally:
        response.close()
    text = raw.decode("utf-8", errors="replace")
    try:
        detail = engine_error_message(json.loads(text)) or text
    except ValueError:
        detail = text
    code, retriable = error_code_for_status(response.status)
    message = f"{name} answered HTTP {response.status}"
    if detail.strip():
        message += f": {redact(detail, secrets)}"
    raise EngineError(code, message, retriable=retriable)


StreamFinished = Callable[[EngineError | None], None]


class OpenAIStream:
    """An ``EngineStream`` over a streaming OpenAI completion or chat response.

    Yields non-empty token texts (``choices[0].delta.content`` or
    ``choices[0].text``). Iteration raises EngineError: WORKER_RESET
    (retriable) when the connection drops before the end, DECODE_TIMEOUT when
    no token arrives within ``decode_timeout_s``, the mapped code when the
    engine sends an error object. ``on_finish`` is called once, with the
    error or None, when the stream ends, fails or is closed.
    """

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        *,
        decode_timeout_s: float,
        name: str = "engine",
        secrets: Sequence[str] = (),
        on_finish: StreamFinished | None = None,
    ) -> None:
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.cached_tokens: int | None = None  # prompt tokens the engine took from its KV cache
        self.expected_warm: bool | None = None  # set by an engine that routes sessions to slots
        self._response = response
        self._timeout = decode_timeout_s
        self._name = name
        self._secrets = tuple(secrets)
        self._on_finish = on_finish
        self._decoder = SseDecoder()
        self._tokens: deque[str] = deque()
        self._done = False
        self._closed = False
        self._error: EngineError | None = None
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + decode_timeout_s

    @property
    def kv_warm(self) -> bool | None:
        """Return whether the prompt found its KV cache warm: the engine's count of cached
        prompt tokens once the stream reported it, else the routing's expectation."""
        if self.cached_tokens is not None:
            return self.cached_tokens > 0
        return self.expected_warm

    def __aiter__(self) -> OpenAIStream:
        return self

    async def __anext__(self) -> str:
        """Return the next token text (a Delta when it carries tool calls or logprobs).

        Raises StopAsyncIteration at the end, or EngineError."""
        if not self._tokens:  # the decode timeout counts while we wait, not while the
            self._deadline = self._loop.time() + self._timeout  # consumer is busy
        while not self._tokens:
            if self._error is not None:
                raise self._error
            if self._done or self._closed:
                raise StopAsyncIteration
            await self._read()
        return self._tokens.popleft()

    async def aclose(self) -> None:
        """Close the response, which makes the engine stop generating. Idempotent."""
        if not self._closed:
            self._closed = True
            self._response.close()
            self._finish(None)

    async def _read(self) -> None:
        # silence is bounded by the request's sock_read timeout (one timer per
        # read inside aiohttp); a stream that sends bytes but no token is
        # caught by the deadline check below
        try:
            chunk = await self._response.content.readany()
        except TimeoutError:
            self._timed_out()
            return
        except (aiohttp.ClientError, OSError) as exc:
            if self._error is None and not self._closed:
                self._dropped(type(exc).__name__)
            return
        if self._loop.time() > self._deadline and chunk:
            self._timed_out()
            return
        try:
            events = self._decoder.feed(chunk) if chunk else self._decoder.close()
        except SseLineTooLong:
            limit = MAX_LINE_CHARS // (1024 * 1024)
            why = f"{self._name} sent a stream line over {limit} MiB; this stream was stopped"
            self._fail(ErrorCode.INTERNAL, why)
            return
        self._events(events)
        if not chunk:
            if self._done or self._error is not None:
                return
            if self.finish_reason is None:
                self._dropped("end of stream before [DONE]")
            else:
                self._end()

    def _timed_out(self) -> None:
        self._fail(
            ErrorCode.DECODE_TIMEOUT, f"no token from {self._name} within {self._timeout:g} s"
        )

    def _events(self, events: list[SseEvent]) -> None:
        for event in events:
            if self._done or self._error is not None:
                return
            if event.data == "[DONE]":
                self._end()
                return
            self._payload(event)

    def _payload(self, event: SseEvent) -> None:
        try:
            obj = loads(event.data)
        except ValueError:
            self._fail(ErrorCode.INTERNAL, f"{self._name} sent a malformed stream event")
            return
        if not isinstance(obj, dict):
            return
        if event.event == "error" or "error" in obj:
            err = _error_from_object(obj, self._name, self._secrets)
            self._set_error(err)
            return
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            self.prompt_tokens = usage["prompt_tokens"]
            details = usage.get("prompt_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, dict) else None
            self.cached_tokens = cached if isinstance(cached, int) else None
        choices = obj.get("choices")
        if choices and isinstance(choices, list) and isinstance(choices[0], dict):
            self._choice(choices[0])

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        if calls or choice.get("logprobs"):
            self._tokens.append(_delta(text, calls, choice.get("logprobs")))
        elif text and isinstance(text, str):
            self._tokens.append(text)
        reason = choice.get("finish_reason")
        if reason:
            self.finish_reason = reason if reason in ("length", "tool_calls") else "stop"

    def _end(self) -> None:
        self._done = True
        self._response.release()
        self._finish(None)

    def _dropped(self, why: str) -> None:
        message = f"connection to {self._name} dropped mid-stream ({why})"
        self._set_error(EngineError(ErrorCode.WORKER_RESET, message, retriable=True))

    def _fail(self, code: ErrorCode, message: str) -> None:
        self._set_error(EngineError(code, message, retriable=False))

    def _set_error(self, error: EngineError) -> None:
        self._error = error
        self._response.close()
        self._finish(error)

    def _finish(self, error: EngineError | None) -> None:
        callback, self._on_finish = self._on_finish, None
        if callback is not None:
            callback(error)


async def open_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: Mapping[str, Any],
    *,
    decode_timeout_s: float,
    connect_timeout_s: float,
    name: str,
    headers: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
    on_finish: StreamFinished | None = None,
) -> OpenAIStream:
    """POST ``body`` to ``url`` and return the stream once the engine accepted it.

    Raises EngineError: WORKER_RESET (retriable) when the engine cannot be
    reached, the mapped code for an HTTP error status, DECODE_TIMEOUT when
    the response headers take longer than ``decode_timeout_s``. Awaits the
    response headers.
    """
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=connect_timeout_s, sock_read=decode_timeout_s
    )
    try:
        response = await _post(session, url, body, headers, limits=timeout)
    except TimeoutError as exc:
        why = f"{name} did not answer within {decode_timeout_s:g} s"
        raise EngineError(ErrorCode.DECODE_TIMEOUT, why) from exc
    except (aiohttp.ClientError, OSError) as exc:
        why = f"cannot reach {name} ({type(exc).__name__})"
        raise EngineError(ErrorCode.WORKER_RESET, why, retriable=True) from exc
    await raise_for_status(response, name=name, secrets=secrets)
    return OpenAIStream(
        response,
        decode_timeout_s=decode_timeout_s,
        name=name,
        secrets=secrets,
        on_finish=on_finish,
    )


STALE_RETRIES = 2
"""How many times a request is sent again after a dead kept-alive connection."""


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None,
    *,
    limits: aiohttp.ClientTimeout,
) -> aiohttp.ClientResponse:
    """POST ``body`` under the ``limits``; again when the kept connection it went out
    on was dead before the engine answered.

    A kept-alive connection the engine closed after its last answer (llama-server
    does so while announcing keep-alive) fails the write or ends without a
    response; the request never reached the engine whole, so it is sent again (up
    to ``STALE_RETRIES`` times: other kept connections may be dead too). A refused
    connection is not retried. Raises what ``session.post`` raises. Awaits the
    response headers.
    """
    for _ in range(STALE_RETRIES):
        try:
            return await session.post(url, json=body, headers=headers, timeout=limits)
        except aiohttp.ClientConnectorError:
            raise
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            continue
    return await session.post(url, json=body, headers=headers, timeout=limits)


def loads(text: str) -> Any:
    """Return the value of the JSON ``text`` (orjson; ``json`` for what orjson refuses:
    NaN, lone surrogate escapes). Raises ValueError for text that is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _delta(text: Any, calls: Any, logprobs: Any) -> Delta:
    """Return the stream item of a chunk with tool-call fragments or logprobs."""
    extra: dict[str, Any] = {}
    if calls:
        extra["tool_calls"] = calls
    if logprobs:
        extra["logprobs"] = logprobs
    return Delta(text if isinstance(text, str) else "", extra)


def request_body(request: EngineRequest, model: str) -> tuple[str, dict[str, Any]]:
    """Return the OpenAI endpoint (relative to ``/v1``) and streaming body for ``request``.

    Chat messages go to ``chat/completions``, a prompt to ``completions``. Pure.
    """
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    if request.seed is not None:
        body["seed"] = request.seed
    if request.stop:
        body["stop"] = list(request.stop)
    body.update(request.options)
    if request.messages is not None:
        body["messages"] = [m.model_dump(mode="json", exclude_none=True) for m in request.messages]
        return "chat/completions", body
    body["prompt"] = request.prompt or ""
    return "completions", body
