"""Fixtures for the HTTP API tests: an orchestrator over mock engines, served by the real app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler

from app.api import ApiSettings, make_app
from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.service import Orchestrator, OrchestratorConfig

REMOTE_HEADER = "X-Test-Peer"


class FixedClock:
    """A clock that never moves (durations come out as 0)."""

    def monotonic(self) -> float:
        return 1000.0

    def time(self) -> float:
        return 1_700_000_000.0


@web.middleware
async def fake_peer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Present the request as coming from the address in X-Test-Peer (a LAN client)."""
    peer = request.headers.get(REMOTE_HEADER)
    if peer is not None:
        request = request.clone(remote=peer)
    return await handler(request)


@dataclass
class Api:
    """A served orchestrator: the test client, the facade and its mock engines."""

    client: TestClient[web.Request, web.Application]
    orch: Orchestrator
    engines: list[MockEngine]
    app: web.Application
    extra: dict[str, Any] = field(default_factory=dict)

    async def submit(self, **body: Any) -> str:
        """Enqueue a task (prompt "hello" by default) and return its id; asserts 202."""
        body.setdefault("prompt", "hello")
        resp = await self.client.post("/v1/tasks", json=body)
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["task_id"])


MakeApi = Callable[..., Awaitable[Api]]


async def wait_until(check: Callable[[], bool], within_s: float = 3.0) -> None:
    """Poll ``check`` until it holds; fails the test after ``within_s`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while not check():
        if loop.time() > end:
            pytest.fail(f"condition not met within {within_s} s")
        await asyncio.sleep(0.01)


async def started_orch(
    specs: Sequence[MockSpec],
    clock: Any = None,
    engine_class: type[MockEngine] = MockEngine,
    **cfg: Any,
) -> tuple[Orchestrator, list[MockEngine]]:
    """Return a started orchestrator over mock engines (waits for ready pools)."""
    engines = [engine_class(s) for s in specs]
    orch = Orchestrator(engines, OrchestratorConfig(**cfg), clock=clock)
    await orch.start()
    instant = [e for e in engines if e.spec.start_delay_ms == 0]
    await wait_until(lambda: all(e.status.state is PoolState.READY for e in instant))
    return orch, engines


@pytest.fixture
async def make_api(aiohttp_client: Any) -> AsyncIterator[MakeApi]:
    """Return a factory: ``await make_api(*specs, settings=..., peer=False, **config)``."""
    made: list[Orchestrator] = []

    async def factory(
        *specs: MockSpec,
        settings: ApiSettings | None = None,
        peer: bool = False,
        clock: Any = None,
        engine_class: type[MockEngine] = MockEngine,
        **cfg: Any,
    ) -> Api:
        specs = specs or (MockSpec("m0", tokens_per_s=0),)
        orch, engines = await started_orch(specs, clock, engine_class, **cfg)
        made.append(orch)
        app = make_app(orch, settings or ApiSettings())
        if peer:
            app.middlewares.insert(0, fake_peer)
        client = await aiohttp_client(app)
        return Api(client, orch, engines, app)

    yield factory
    for orch in made:
        await orch.shutdown(deadline_s=0.1)


async def read_frames(resp: Any, count: int) -> list[bytes]:
    """Read ``count`` SSE blocks (frames or comments) from a streaming response."""
    return [await resp.content.readuntil(b"\n\n") for _ in range(count)]


def parse_frames(body: bytes) -> list[tuple[str, str]]:
    """Return ``(event, data)`` pairs of an SSE body (comments skipped)."""
    out = []
    for block in body.decode().split("\n\n"):
        if not block or block.startswith(":"):
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], lines["data"]))
    return out
