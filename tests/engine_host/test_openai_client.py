"""The shared SSE decoder and the OpenAI stream, against a real loopback server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from app.engine_host import process
from app.engine_host.openai_client import (
    MAX_LINE_CHARS,
    OpenAIStream,
    SseDecoder,
    SseEvent,
    SseLineTooLong,
    error_code_for_status,
    open_stream,
    redact,
    request_body,
)
from app.orchestrator.contracts import ChatMessage, ErrorCode
from app.orchestrator.ports import EngineError, EngineRequest, EngineStream
from tests.engine_host.conftest import serve

TEXTS = ["Hé", "llo", " 🦙", " 世界", "!"]


def chunk(text: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if text is not None:
        choice["delta"] = {"content": text}
    else:
        choice["delta"] = {}
    return b"data: " + json.dumps({"choices": [choice], **extra}).encode() + b"\n\n"


WIRE = (
    b": keep-alive comment\r\n\r\n"
    + b'data: {"choices":[{"delta":{"role":"assistant"}}]}\r\n\r\n'
    + b"".join(chunk(t).replace(b"\n", b"\r\n") for t in TEXTS[:2])
    + b"event: message\ndata: "
    + json.dumps({"choices": [{"text": TEXTS[2]}]}, ensure_ascii=False).encode()
    + b"\n\n"
    + b"data: "
    + json.dumps({"choices": [{"delta": {"content": TEXTS[3]}}]}, ensure_ascii=False).encode()
    + b"\r\r"
    + chunk(TEXTS[4], None)
    + chunk(None, "length", usage={"prompt_tokens": 7, "completion_tokens": 5})
    + b"data: [DONE]\n\n"
)


def decode_all(pieces: list[bytes]) -> list[SseEvent]:
    decoder = SseDecoder()
    events: list[SseEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def test_decoder_gives_the_same_events_for_every_split_position() -> None:
    whole = decode_all([WIRE])
    assert len(whole) == 8
    assert whole[-1] == SseEvent("message", "[DONE]")
    assert TEXTS[2] in whole[3].data
    for cut in range(1, len(WIRE)):
        assert decode_all([WIRE[:cut], WIRE[cut:]]) == whole, f"split at byte {cut}"
    assert decode_all([WIRE[i : i + 1] for i in range(len(WIRE))]) == whole


def test_decoder_keeps_long_lines_in_pieces_and_caps_them() -> None:
    """A line cut into many chunks decodes whole; past the cap it fails, not grows."""
    line = b"data: " + b"x" * 5000 + b"\n\n"
    decoder = SseDecoder(max_line=6000)
    events: list[SseEvent] = []
    for start in range(0, len(line), 7):
        events += decoder.feed(line[start : start + 7])
    assert events == [SseEvent("message", "x" * 5000)]
    capped = SseDecoder(max_line=1000)
    with pytest.raises(SseLineTooLong):
        for _ in range(200):
            capped.feed(b"y" * 64)
    many = SseDecoder(max_line=1000)  # many short data lines without a blank one
    with pytest.raises(SseLineTooLong):
        for _ in range(200):
            many.feed(b"data: " + b"z" * 60 + b"\n")
    split_cr = SseDecoder()  # "\r" ends a line even when the next chunk goes on
    assert split_cr.feed(b"data: a\r\r") == []
    assert split_cr.feed(b"data") == [SseEvent("message", "a")]


def test_decoder_handles_multiline_data_event_names_and_a_missing_final_blank_line() -> None:
    decoder = SseDecoder()
    events = decoder.feed(b"event: error\ndata: line one\ndata:line two\nid: 4\nretry: 10\n\n")
    assert events == [SseEvent("error", "line one\nline two")]
    assert decoder.feed(b"data: tail") == []
    assert decoder.close() == [SseEvent("message", "tail")]


def test_decoder_replaces_invalid_utf8_instead_of_failing() -> None:
    assert decode_all([b"data: \xff\xfeok\n\n"]) == [SseEvent("message", "\ufffd\ufffdok")]


def test_redact_removes_secrets_bearer_tokens_and_key_like_words() -> None:
    text = "bad key sk-abcdefghijklmnop; header was Authorization: Bearer tok123 and hunter2"
    cleaned = redact(text, secrets=("hunter2",))
    assert "sk-abcdefghijklmnop" not in cleaned
    assert "tok123" not in cleaned
    assert "hunter2" not in cleaned
    assert len(redact("x" * 5000)) < 400


@pytest.mark.parametrize(
    ("status", "code", "retriable"),
    [
        (400, ErrorCode.INVALID_PARAMS, False),
        (500, ErrorCode.INTERNAL, False),
        (503, ErrorCode.POOL_UNAVAILABLE, True),
        (504, ErrorCode.DECODE_TIMEOUT, True),
    ],
)
def test_http_status_maps_to_the_error_taxonomy(
    status: int, code: ErrorCode, retriable: bool
) -> None:
    assert error_code_for_status(status) == (code, retriable)


def test_request_body_picks_the_endpoint_and_carries_the_sampling_fields() -> None:
    chat = EngineRequest(
        prompt=None,
        messages=[ChatMessage(role="user", content="hi")],
        max_tokens=5,
        temperature=0.0,
        seed=9,
        stop=("\n",),
    )
    path, body = request_body(chat, "demo")
    assert path == "chat/completions"
    assert body == {
        "model": "demo",
        "stream": True,
        "max_tokens": 5,
        "temperature": 0.0,
        "seed": 9,
        "stop": ["\n"],
        "messages": [{"role": "user", "content": "hi"}],
    }
    plain = EngineRequest(prompt="p", messages=None, max_tokens=1, temperature=1.0, seed=None)
    path, body = request_body(plain, "demo")
    assert path == "completions"
    assert body["prompt"] == "p"
    assert "seed" not in body
    assert "stop" not in body


# ---- against a real loopback server ----

Script = Callable[[web.StreamResponse, web.Request], Awaitable[None]]


class Engine:
    """A scripted engine: each POST runs ``script``; remembers what happened."""

    def __init__(self, script: Script, status: int = 200, body: bytes = b"") -> None:
        self.script = script
        self.status = status
        self.body = body
        self.cancelled = asyncio.Event()
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        if self.status != 200:
            return web.Response(status=self.status, body=self.body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await self.script(response, request)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return response


async def pieces(response: web.StreamResponse, data: bytes, size: int) -> None:
    for start in range(0, len(data), size):
        await response.write(data[start : start + size])
        await asyncio.sleep(0.002)


@asynccontextmanager
async def open_against(
    engine: Engine, *, timeout_s: float = 5.0, **kwargs: Any
) -> AsyncIterator[tuple[OpenAIStream, list[EngineError | None]]]:
    app = web.Application()
    app.router.add_post("/v1/completions", engine.handle)
    finished: list[EngineError | None] = []
    async with serve(app) as base, aiohttp.ClientSession() as session:
        stream = await open_stream(
            session,
            f"{base}/v1/completions",
            {"prompt": "x", "stream": True},
            decode_timeout_s=timeout_s,
            connect_timeout_s=2.0,
            name="test engine",
            on_finish=finished.append,
            **kwargs,
        )
        try:
            yield stream, finished
        finally:
            await stream.aclose()


async def collect(stream: OpenAIStream) -> list[str]:
    return [token async for token in stream]


async def test_stream_yields_tokens_from_frames_split_anywhere() -> None:
    async def script(response: web.StreamResponse, _: web.Request) -> None:
        await pieces(response, WIRE, 3)

    async with open_against(Engine(script)) as (stream, finished):
        assert isinstance(stream, EngineStream)
        assert await collect(stream) == TEXTS
        assert stream.finish_reason == "length"
        assert stream.prompt_tokens == 7
        assert finished == [None]


async def test_dropped_connection_is_a_retriable_worker_reset() -> None:
    async def script(response: web.StreamResponse, request: web.Request) -> None:
        await response.write(chunk("a") + chunk("b"))
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()

    async with open_against(Engine(script)) as (stream, finished):
        tokens: list[str] = []
        with pytest.raises(EngineError) as caught:
            async for token in stream:
                tokens.append(token)
        assert tokens == ["a", "b"]
        assert caught.value.code is ErrorCode.WORKER_RESET
        assert caught.value.retriable
        assert finished == [caught.value]


async def test_end_of_stream_without_done_or_finish_reason_is_a_worker_reset() -> None:
    async def script(response: web.StreamResponse, _: web.Request) -> None:
        await response.write(chunk("a"))

    async with open_against(Engine(script)) as (stream, _):
        with pytest.raises(EngineError) as caught:
            await collect(stream)
        assert caught.value.code is ErrorCode.WORKER_RESET


async def test_end_of_stream_after_a_finish_reason_is_a_normal_end() -> None:
    async def script(response: web.StreamResponse, _: web.Request) -> None:
        await response.write(chunk("a") + chunk(None, "stop"))

    async with open_against(Engine(script)) as (stream, _):
        assert await collect(stream) == ["a"]
        assert stream.finish_reason == "stop"


async def test_stalled_engine_gives_decode_timeout_and_the_engine_sees_the_close() -> None:
    async def script(response: web.StreamResponse, _: web.Request) -> None:
        await response.write(chunk("a"))
        for _tick in range(100):  # keep-alive comments are not tokens
            await response.write(b": ping\n\n")
            await asyncio.sleep(0.05)

    engine = Engine(script)
    async with open_against(engine, timeout_s=0.3) as (stream, finished):
        assert await anext(stream) == "a"
        with pytest.raises(EngineError) as caught:
            await anext(stream)
        assert caught.value.code is ErrorCode.DECODE_TIMEOUT
        assert finished == [caught.value]
        await asyncio.wait_for(engine.cancelled.wait(), 2.0)


async def test_aclose_stops_the_engine_request() -> None:
    async def script(response: web.StreamResponse, _: web.Request) -> None:
        for i in range(1000):
            await response.write(chunk(f"t{i}"))
            await asyncio.sleep(0.01)

    engine = Engine(script)
    async with open_against(engine) as (stream, finished):
        assert await anext(stream) == "t0"
        await stream.aclose()
        await asyncio.wait_for(engine.cancelled.wait(), 2.0)
        assert finished == [None]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)


async def test_error_object_mid_stream_is_raised_without_secrets() -> None:
    async def script(response: web.StreamResponse, _: web.Request) -> None:
        error = {"error": {"message": "kv cache full for key sk-secretsecret99", "code": 503}}
        await response.write(chunk("a") + b"data: " + json.dumps(error).encode() + b"\n\n")
        await asyncio.sleep(5)

    async with open_against(Engine(script)) as (stream, _):
        with pytest.raises(EngineError) as caught:
            await collect(stream)
        assert caught.value.code is ErrorCode.POOL_UNAVAILABLE
        assert "kv cache full" in caught.value.message
        assert "sk-secretsecret99" not in caught.value.message


async def test_http_error_status_is_raised_when_opening() -> None:
    body = json.dumps({"error": {"message": "model crashed, token=hunter2"}}).encode()
    engine = Engine(lambda r, q: asyncio.sleep(0), status=500, body=body)
    with pytest.raises(EngineError) as caught:
        async with open_against(engine, secrets=("hunter2",)):
            pass
    assert caught.value.code is ErrorCode.INTERNAL
    assert "HTTP 500" in caught.value.message
    assert "model crashed" in caught.value.message
    assert "hunter2" not in caught.value.message


async def test_refused_connection_is_a_retriable_worker_reset() -> None:
    port = process.free_loopback_port()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(EngineError) as caught:
            await open_stream(
                session,
                f"http://127.0.0.1:{port}/v1/completions",
                {},
                decode_timeout_s=1.0,
                connect_timeout_s=1.0,
                name="nobody",
            )
    assert caught.value.code is ErrorCode.WORKER_RESET
    assert caught.value.retriable


async def test_a_huge_line_fails_only_that_stream_and_is_not_read_to_the_end() -> None:
    """100 MB without a line end: the stream stops past the cap; the engine sees the close."""
    total = 100 * 1024 * 1024
    sent = [0]

    async def script(response: web.StreamResponse, _: web.Request) -> None:
        block = b"x" * (256 * 1024)
        await response.write(b"data: ")
        while sent[0] < total:
            await response.write(block)
            sent[0] += len(block)

    engine = Engine(script)
    async with open_against(engine) as (stream, finished):
        with pytest.raises(EngineError) as caught:
            await collect(stream)
    assert caught.value.code is ErrorCode.INTERNAL
    assert "stream line over 4 MiB" in caught.value.message
    assert finished == [caught.value]
    assert sent[0] < total // 2, "the stream should stop soon after the cap"
    assert MAX_LINE_CHARS == 4 * 1024 * 1024


class OneAnswerPerConnection:
    """A raw HTTP engine that answers one request per connection while announcing
    keep-alive, and drops the next request on that connection unanswered."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        body = chunk("hi") + chunk(None, "stop") + b"data: [DONE]\n\n"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: keep-alive\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        self.answered += 1
        await reader.read(1)  # the next request on this connection: no answer
        writer.close()


async def test_a_kept_alive_connection_the_engine_dropped_is_replaced_by_a_fresh_one() -> None:
    engine = OneAnswerPerConnection()
    server = await asyncio.start_server(engine.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                stream = await open_stream(
                    session,
                    f"http://127.0.0.1:{port}/v1/completions",
                    {"prompt": "x", "stream": True},
                    decode_timeout_s=5.0,
                    connect_timeout_s=2.0,
                    name="test engine",
                )
                assert await collect(stream) == ["hi"]
                await stream.aclose()
    finally:
        server.close()
        await server.wait_closed()
    assert engine.answered == 3 and engine.connections >= 3


def test_engine_json_is_read_with_the_fallback_for_what_orjson_refuses() -> None:
    from app.engine_host.openai_client import loads

    assert loads('{"choices":[{"delta":{"content":"Hé"}}]}') == {
        "choices": [{"delta": {"content": "Hé"}}]
    }
    assert loads('"\\ud83e"') == "\ud83e"  # a lone surrogate escape: json reads it
    assert str(loads('{"v": NaN}')["v"]) == "nan"
    with pytest.raises(ValueError):
        loads("{not json")
