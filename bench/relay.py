"""The bare relay: the least an HTTP proxy in front of the engine can do (a peer in the bench).

``python -m bench.relay --port P --upstream http://127.0.0.1:E/v1`` forwards
``POST /v1/chat/completions`` (and ``/v1/completions``) to the engine and copies
the streamed body back chunk by chunk: no parsing, no validation, no queue.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def relay(request: web.Request) -> web.StreamResponse:
    """Forward the request body upstream and copy the answer back as it arrives."""
    url = request.app[UPSTREAM] + request.path.removeprefix("/v1")
    body = await request.read()
    headers = {"Content-Type": "application/json"}
    async with request.app[SESSION].post(url, data=body, headers=headers) as upstream:
        response = web.StreamResponse(status=upstream.status)
        response.content_type = upstream.content_type
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def _session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0)
    app[SESSION] = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout())
    yield
    await app[SESSION].close()


def make_app(upstream: str) -> web.Application:
    """Return the relay's application in front of ``upstream`` (the engine's …/v1)."""
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_post("/v1/chat/completions", relay)
    app.router.add_post("/v1/completions", relay)
    app.router.add_get("/v1/models", _models)
    return app


async def _models(_request: web.Request) -> web.Response:
    return web.json_response({"data": []})


def main() -> None:
    """Serve the relay until killed."""
    p = argparse.ArgumentParser(prog="python -m bench.relay")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="the engine's OpenAI base URL (…/v1)")
    args = p.parse_args()
    app = make_app(args.upstream)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
