"""The paced benchmark engine: OpenAI-valid chunks, the configured gap, any concurrency."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from bench.paced_engine import PacedEngine, token_text

GAP_MS = 20.0


@asynccontextmanager
async def serve(engine: PacedEngine) -> AsyncIterator[str]:
    """Run ``engine`` on a free loopback port; yield its OpenAI base URL."""
    runner = web.AppRunner(engine.make_app(), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


async def read_stream(resp: aiohttp.ClientResponse) -> list[tuple[float, str]]:
    """Return every ``data:`` payload of an SSE response with its arrival time."""
    events: list[tuple[float, str]] = []
    pending = b""
    async for chunk in resp.content.iter_any():
        now = time.perf_counter()
        pending += chunk
        *frames, pending = pending.split(b"\n\n")
        for frame in frames:
            assert frame.startswith(b"data: "), frame
            events.append((now, frame[6:].decode()))
    assert pending == b""
    return events


async def chat_stream(base: str, max_tokens: int, **extra: Any) -> list[tuple[float, str]]:
    body = {"model": "paced", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/chat/completions", json={**body, "max_tokens": max_tokens, **extra}
        ) as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        return await read_stream(r)


async def test_chat_stream_sends_valid_chunks_at_the_configured_gap() -> None:
    async with serve(PacedEngine(gap_ms=GAP_MS, tokens=100)) as base:
        events = await chat_stream(base, max_tokens=10)
    assert events[-1][1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(data)) for _, data in events[:-1]]
    texts = [c.choices[0].delta.content for c in chunks[:-1]]
    assert texts == [token_text(i) for i in range(10)]
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 10 + ["length"]
    arrivals = [t for t, _ in events[:10]]
    gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]
    assert arrivals[-1] - arrivals[0] >= 9 * GAP_MS * 0.95 / 1000
    assert GAP_MS * 0.5 <= statistics.median(gaps_ms) <= GAP_MS * 3


async def test_streams_run_concurrently_each_at_its_own_pace() -> None:
    engine = PacedEngine(gap_ms=GAP_MS, tokens=5)
    async with serve(engine) as base:
        start = time.perf_counter()
        results = await asyncio.gather(*(chat_stream(base, max_tokens=50) for _ in range(20)))
        elapsed = time.perf_counter() - start
    assert all(len(events) == 5 + 2 for events in results)
    assert [json.loads(e[-2][1])["choices"][0]["finish_reason"] for e in results] == ["stop"] * 20
    assert engine.streams_started == 20
    assert engine.tokens_sent == 100
    assert elapsed < 20 * 4 * GAP_MS / 1000 / 2  # far below one stream after another


async def test_completions_stream_and_usage_chunk() -> None:
    async with serve(PacedEngine(gap_ms=1, tokens=3)) as base:
        body = {"model": "paced", "prompt": "hi", "stream": True}
        body["stream_options"] = {"include_usage": True}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{base}/completions", json=body) as r,
        ):
            events = await read_stream(r)
    payloads = [json.loads(data) for _, data in events[:-1]]
    assert {p["object"] for p in payloads} == {"text_completion"}
    texts = [p["choices"][0]["text"] for p in payloads[:-1]]
    assert texts == [token_text(i) for i in range(3)] + [""]
    last = Completion.model_validate(payloads[-2])
    assert last.choices[0].finish_reason == "stop"
    assert payloads[-1]["choices"] == []
    assert payloads[-1]["usage"]["completion_tokens"] == 3
    assert events[-1][1] == "[DONE]"


async def test_models_and_non_streaming_answers() -> None:
    async with (
        serve(PacedEngine(gap_ms=1, tokens=4, model="m1")) as base,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{base}/models") as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["m1"]
        async with http.post(f"{base}/completions", json={"prompt": "x", "max_tokens": 2}) as r:
            whole = Completion.model_validate(await r.json())
        async with http.post(f"{base}/chat/completions", data=b"not json") as r:
            assert r.status == 400
    assert whole.choices[0].text == token_text(0) + token_text(1)
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_runs_as_a_separate_process() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.paced_engine", "--port", str(port), "--gap-ms", "2"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--tokens", "3", stdout=asyncio.subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"{base}/models") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        events = await chat_stream(base, max_tokens=100)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=5)
    assert len(events) == 3 + 2
    assert proc.returncode in (0, -15)
