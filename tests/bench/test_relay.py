"""The bare relay peer copies the engine's streamed answer byte for byte."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bench.relay import make_app

FRAMES = [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', b"data: [DONE]\n\n"]


async def engine(request: web.Request) -> web.StreamResponse:
    assert (await request.json())["stream"] is True
    response = web.StreamResponse()
    response.content_type = "text/event-stream"
    await response.prepare(request)
    for frame in FRAMES:
        await response.write(frame)
    await response.write_eof()
    return response


async def test_the_relay_copies_the_stream() -> None:
    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", engine)
    async with TestServer(upstream) as up:
        relay = TestServer(make_app(str(up.make_url("/v1"))))
        async with TestClient(relay) as client:
            resp = await client.post("/v1/chat/completions", json={"stream": True})
            assert resp.status == 200
            assert resp.content_type == "text/event-stream"
            assert await resp.read() == b"".join(FRAMES)
