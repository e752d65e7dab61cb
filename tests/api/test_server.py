"""ApiServer on real sockets: start on port 0, refusals, rebind, shutdown closing streams."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from app.api import ApiServer, ApiSettings, UnsafeBind, make_app
from app.engine_host.mock import MockSpec
from app.orchestrator.service import Orchestrator
from tests.api.conftest import started_orch

LOCAL = ApiSettings(bind_port=0)


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    orch, _ = await started_orch([MockSpec("m0", tokens_per_s=0, hang_after_tokens=2)])
    yield orch
    await orch.shutdown(deadline_s=0.1)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        return resp.status


async def test_start_on_port_zero_reports_the_real_port(
    orch: Orchestrator, http: aiohttp.ClientSession
) -> None:
    server = ApiServer(orch, LOCAL)
    await server.start()
    try:
        port = int(server.url.rsplit(":", 1)[1])
        assert server.url == f"http://127.0.0.1:{port}" and port > 0
        assert await _status(http, server.url + "/v1/pools") == 200
    finally:
        await server.stop()
    await server.stop()  # idempotent
    with pytest.raises(aiohttp.ClientConnectionError):
        await _status(http, server.url + "/v1/pools")


async def test_refuses_lan_bind_without_token(orch: Orchestrator) -> None:
    server = ApiServer(orch, ApiSettings(bind_host="0.0.0.0", bind_port=0))
    with pytest.raises(UnsafeBind, match="BIND_ADDR"):
        await server.start()
    assert not server.running


async def test_port_in_use_names_the_address(orch: Orchestrator) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = ApiServer(orch, ApiSettings(bind_port=port))
        with pytest.raises(OSError, match=f"127.0.0.1:{port}.*already in use"):
            await server.start()
        assert not server.running


async def test_rebind_moves_the_listener_and_keeps_it_on_failure(
    orch: Orchestrator, http: aiohttp.ClientSession
) -> None:
    server = ApiServer(orch, LOCAL)
    await server.start()
    try:
        old_url = server.url
        await server.rebind(ApiSettings(bind_port=0, sse_heartbeat_ms=100))
        assert server.url != old_url and server.settings.sse_heartbeat_ms == 100
        assert await _status(http, server.url + "/v1/pools") == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await _status(http, old_url + "/v1/pools")
        current = server.url
        with socket.create_server(("127.0.0.1", 0)) as taken:
            busy = ApiSettings(bind_port=taken.getsockname()[1])
            with pytest.raises(OSError, match="already in use"):
                await server.rebind(busy)
        with pytest.raises(UnsafeBind):
            await server.rebind(ApiSettings(bind_host="0.0.0.0", bind_port=0))
        assert server.url == current and server.settings.sse_heartbeat_ms == 100
        assert await _status(http, current + "/v1/pools") == 200
        await server.rebind(ApiSettings(bind_port=int(current.rsplit(":", 1)[1]), auth_token="t"))
        assert server.url == current and await _status(http, current + "/v1/pools") == 401
    finally:
        await server.stop()


async def test_stop_ends_live_streams_with_an_error_frame(
    orch: Orchestrator, http: aiohttp.ClientSession
) -> None:
    server = ApiServer(orch, LOCAL)
    await server.start()
    async with http.post(server.url + "/v1/tasks", json={"prompt": "x", "max_tokens": 9}) as r:
        task_id = (await r.json())["task_id"]
    async with http.get(f"{server.url}/v1/tasks/{task_id}/stream") as stream:
        head = [await stream.content.readuntil(b"\n\n") for _ in range(3)]
        assert head[2].startswith(b"event: token")
        await asyncio.wait_for(server.stop(), 5)
        tail = (await stream.content.read()).decode()
    assert tail.startswith("event: error\ndata: ") and tail.endswith("\n\n")
    data = json.loads(tail.split("data: ", 1)[1])
    assert data == {
        "code": "POOL_UNAVAILABLE",
        "message": "server shutting down",
        "retriable": True,
    }
    assert orch.task(task_id).state == "canceled"


async def test_app_cleanup_alone_closes_live_streams(
    orch: Orchestrator, http: aiohttp.ClientSession
) -> None:
    runner = web.AppRunner(make_app(orch, LOCAL))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = "http://" + ":".join(map(str, runner.addresses[0][:2]))
    async with http.post(url + "/v1/tasks", json={"prompt": "x", "max_tokens": 9}) as r:
        task_id = (await r.json())["task_id"]
    async with http.get(f"{url}/v1/tasks/{task_id}/stream") as stream:
        await stream.content.readuntil(b"\n\n")
        await asyncio.wait_for(runner.cleanup(), 5)
        tail = (await stream.content.read()).decode()
    assert tail.endswith('"message":"server shutting down","retriable":true}\n\n')
    assert orch.task(task_id).state == "canceled"


async def test_rebind_to_another_address_on_the_same_port(
    orch: Orchestrator, http: aiohttp.ClientSession
) -> None:
    """Settings' "Serve on local network": 127.0.0.1:P -> 0.0.0.0:P, and back on failure."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    server = ApiServer(orch, ApiSettings(bind_port=port))
    await server.start()
    try:
        lan = ApiSettings(bind_host="0.0.0.0", bind_port=port, auth_token="t")
        await server.rebind(lan)
        assert server.url == f"http://0.0.0.0:{port}"
        assert await _status(http, f"http://127.0.0.1:{port}/v1/pools") == 401  # token now
        with socket.socket() as other:  # 0.0.0.0:P is ours now
            other.bind(("127.0.0.1", 0))
            assert other.connect_ex(("127.0.0.1", port)) == 0

        back = ApiSettings(bind_port=port)
        await server.rebind(back)
        assert server.url == f"http://127.0.0.1:{port}"
        assert await _status(http, f"http://127.0.0.1:{port}/v1/pools") == 200

        unreachable = ApiSettings(bind_host="203.0.113.7", bind_port=port, auth_token="t")
        with pytest.raises(OSError, match=f"203.0.113.7:{port}"):
            await server.rebind(unreachable)
        assert server.url == f"http://127.0.0.1:{port}" and server.settings == back
        assert await _status(http, f"http://127.0.0.1:{port}/v1/pools") == 200
    finally:
        await server.stop()
