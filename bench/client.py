"""The load generator's streams: direct to the engine, OrchQueue SSE, OpenAI API.

Each stream records when its request started and when every token arrived
(``time.perf_counter``, taken once per received chunk). SSE frames are split
incrementally on blank lines; every stream kind parses its payloads with one
``json.loads`` per frame so the client costs the same whichever path it
measures.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

PROMPT = "Write a long story about a lighthouse."
TOKEN, NOTHING, END, FAIL = 1, 0, 2, 3


@dataclass
class StreamResult:
    """What one stream saw: start time, token arrival times, and how it ended."""

    start: float
    arrivals: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def tokens(self) -> int:
        """Return the number of tokens received."""
        return len(self.arrivals)

    @property
    def ttft(self) -> float | None:
        """Return seconds from the request to the first token, or None without tokens."""
        return self.arrivals[0] - self.start if self.arrivals else None

    def gaps(self) -> list[float]:
        """Return the seconds between consecutive tokens."""
        a = self.arrivals
        return [a[i] - a[i - 1] for i in range(1, len(a))]


StreamFn = Callable[[aiohttp.ClientSession, int], Awaitable[StreamResult]]


def new_session() -> aiohttp.ClientSession:
    """Return the one client session of a run: no connection limit, no total timeout."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)


def openai_frame(frame: bytes) -> int:
    """Classify one OpenAI SSE frame: TOKEN (non-empty text), END, FAIL or NOTHING."""
    data = frame[6:] if frame.startswith(b"data: ") else b""
    if not data:
        return NOTHING
    if data == b"[DONE]":
        return END
    obj = json.loads(data)
    if "error" in obj:
        return FAIL
    choices = obj.get("choices")
    if not choices:
        return NOTHING
    choice = choices[0]
    delta = choice.get("delta")
    text = delta.get("content") if delta is not None else choice.get("text")
    return TOKEN if text else NOTHING


def orchqueue_frame(frame: bytes) -> int:
    """Classify one OrchQueue SSE frame (``event: <kind>\\ndata: {...}``)."""
    head, _, data = frame.partition(b"\ndata: ")
    if not data:
        return NOTHING
    json.loads(data)
    if head == b"event: token":
        return TOKEN
    if head == b"event: end":
        return END
    if head == b"event: error":
        return FAIL
    return NOTHING


async def read_sse(
    resp: aiohttp.ClientResponse, result: StreamResult, classify: Callable[[bytes], int]
) -> StreamResult:
    """Read ``resp`` to its end, appending token arrival times to ``result``; returns it."""
    content = resp.content
    arrivals = result.arrivals
    clock = time.perf_counter
    pending = b""
    ended = False
    while chunk := await content.readany():
        now = clock()
        pending += chunk
        if b"\n\n" not in pending:
            continue
        *frames, pending = pending.split(b"\n\n")
        for frame in frames:
            kind = classify(frame)
            if kind == TOKEN:
                arrivals.append(now)
            elif kind == END:
                ended = True
            elif kind == FAIL:
                result.error = frame.decode(errors="replace")[:300]
    if not ended and result.error is None:
        result.error = "stream ended without its end frame"
    return result


def _chat_body(model: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "stream": True,
    }


def openai_stream(base_url: str, model: str = "paced") -> StreamFn:
    """Return a stream function for ``POST {base_url}/chat/completions`` with stream true."""
    url = f"{base_url}/chat/completions"

    async def run(http: aiohttp.ClientSession, max_tokens: int) -> StreamResult:
        result = StreamResult(time.perf_counter())
        try:
            async with http.post(url, json=_chat_body(model, max_tokens)) as resp:
                if resp.status != 200:
                    result.error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                    return result
                return await read_sse(resp, result, openai_frame)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            return result

    return run


def orchqueue_stream(orch_url: str) -> StreamFn:
    """Return a stream function: ``POST /v1/tasks``, then ``GET /v1/tasks/{id}/stream``.

    The time to first token counts from the POST.
    """

    async def run(http: aiohttp.ClientSession, max_tokens: int) -> StreamResult:
        result = StreamResult(time.perf_counter())
        body = {"prompt": PROMPT, "max_tokens": max_tokens}
        try:
            async with http.post(f"{orch_url}/v1/tasks", json=body) as resp:
                answer = await resp.json(content_type=None)
                if resp.status not in (200, 201, 202):
                    result.error = f"HTTP {resp.status}: {str(answer)[:300]}"
                    return result
            stream_url = f"{orch_url}/v1/tasks/{answer['task_id']}/stream"
            async with http.get(stream_url) as resp:
                if resp.status != 200:
                    result.error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                    return result
                return await read_sse(resp, result, orchqueue_frame)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            return result

    return run


async def run_concurrent(
    http: aiohttp.ClientSession, stream: StreamFn, count: int, max_tokens: int
) -> list[StreamResult]:
    """Start ``count`` streams at once and return their results when all ended."""
    return list(await asyncio.gather(*(stream(http, max_tokens) for _ in range(count))))


async def run_sequential(
    http: aiohttp.ClientSession, stream: StreamFn, count: int, max_tokens: int
) -> list[StreamResult]:
    """Run ``count`` streams one after another and return their results."""
    return [await stream(http, max_tokens) for _ in range(count)]


async def run_pool(
    http: aiohttp.ClientSession, stream: StreamFn, total: int, concurrency: int, max_tokens: int
) -> list[StreamResult]:
    """Run ``total`` streams, at most ``concurrency`` at a time; return their results."""
    results: list[StreamResult] = []
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            results.append(await stream(http, max_tokens))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def orchqueue_oneshot_stream(orch_url: str) -> StreamFn:
    """Return a stream function for the one-request form: ``POST /v1/tasks`` with
    ``Accept: text/event-stream``, answered with the task's SSE stream at once."""
    headers = {"Accept": "text/event-stream"}

    async def run(http: aiohttp.ClientSession, max_tokens: int) -> StreamResult:
        result = StreamResult(time.perf_counter())
        body = {"prompt": PROMPT, "max_tokens": max_tokens}
        try:
            async with http.post(f"{orch_url}/v1/tasks", json=body, headers=headers) as resp:
                if resp.status != 200:
                    result.error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                    return result
                return await read_sse(resp, result, orchqueue_frame)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            return result

    return run
