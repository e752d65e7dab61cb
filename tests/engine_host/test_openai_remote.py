"""An external OpenAI-compatible engine: a local imitation, and a real llama.cpp server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from app.engine_host import process
from app.engine_host.llamacpp import LlamaCppEngine, LlamaCppSpec
from app.engine_host.openai_remote import OpenAIEngine, OpenAISpec
from app.orchestrator.contracts import ChatMessage, ErrorCode
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.ports import EngineControl, EngineError, EngineRequest, PoolStatus
from tests.engine_host.conftest import serve

KEY = "sk-test-0123456789abcdef"
ENV = {"REMOTE_KEY": KEY}
CHAT = EngineRequest(
    prompt=None,
    messages=[ChatMessage(role="user", content="hi")],
    max_tokens=3,
    temperature=0.0,
    seed=5,
)


class FakeEngine:
    """Imitates an OpenAI engine; ``health`` switches /models between 200 and an error."""

    def __init__(self) -> None:
        self.health = 200
        self.auth: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.fail_next = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.complete)
        app.router.add_post("/v1/completions", self.complete)
        return app

    def authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        self.auth.append(header)
        return header == f"Bearer {KEY}"

    async def models(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        if self.health != 200:
            return web.json_response({"error": {"message": "loading"}}, status=self.health)
        data = [{"id": "demo", "object": "model"}, {"id": "other", "object": "model"}]
        return web.json_response({"object": "list", "data": data}, headers={"Server": "fake/1"})

    async def complete(self, request: web.Request) -> web.StreamResponse:
        self.authorized(request)
        self.bodies.append(await request.json())
        if self.fail_next:
            error = {"error": {"message": f"engine exploded; your key {KEY} is fine"}}
            return web.json_response(error, status=500)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for text in ("one", " two", " three"):
            frame = {"choices": [{"index": 0, "delta": {"content": text}}]}
            await response.write(f"data: {json.dumps(frame)}\n\n".encode())
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
        usage = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}}
        for tail in (end, usage):
            await response.write(f"data: {json.dumps(tail)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[tuple[FakeEngine, str]]:
    engine = FakeEngine()
    async with serve(engine.app()) as base:
        yield engine, f"{base}/v1"


def remote(base_url: str, *, model: str = "demo", env: dict[str, str] = ENV) -> OpenAIEngine:
    spec = OpenAISpec(
        pool_id="remote0",
        base_url=base_url,
        model=model,
        api_key_env="REMOTE_KEY",
        health_interval_s=0.05,
        connect_timeout_s=1.0,
    )
    return OpenAIEngine(spec, environ=env)


async def collect(pool: OpenAIEngine, request: EngineRequest) -> tuple[list[str], int | None]:
    stream = await pool.open_stream(request)
    tokens = [token async for token in stream]
    return tokens, stream.prompt_tokens


async def test_streams_with_the_key_as_a_bearer_header(fake: tuple[FakeEngine, str]) -> None:
    engine, base = fake
    pool = remote(base)
    assert isinstance(pool, EngineControl)
    try:
        await pool.start()
        await pool.wait_for(PoolState.READY, timeout_s=5.0)
        tokens, prompt_tokens = await collect(pool, CHAT)
    finally:
        await pool.stop()
    assert tokens == ["one", " two", " three"]
    assert prompt_tokens == 11
    assert engine.auth and set(engine.auth) == {f"Bearer {KEY}"}
    body = engine.bodies[0]
    assert body["model"] == "demo"
    assert body["stream"] is True
    assert body["seed"] == 5
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert pool.descriptor.engine == "openai"
    assert pool.descriptor.engine_version == "fake/1"
    assert pool.status.state is PoolState.STOPPED


async def test_the_key_never_shows_in_reprs_statuses_or_errors(
    fake: tuple[FakeEngine, str],
) -> None:
    engine, base = fake
    pool = remote(base)
    statuses: list[PoolStatus] = []
    pool.add_listener(statuses.append)
    try:
        await pool.start()
        await pool.wait_for(PoolState.READY, timeout_s=5.0)
        engine.fail_next = True
        with pytest.raises(EngineError) as caught:
            await pool.open_stream(CHAT)
    finally:
        await pool.stop()
    assert caught.value.code is ErrorCode.INTERNAL
    assert "engine exploded" in caught.value.message
    shown = [repr(pool), str(pool), repr(pool.descriptor), str(caught.value), repr(caught.value)]
    shown += [repr(s) for s in statuses] + [repr(pool.status)]
    assert statuses
    assert not [text for text in shown if KEY in text]


async def test_health_failure_makes_the_pool_unready_until_it_answers_again(
    fake: tuple[FakeEngine, str],
) -> None:
    engine, base = fake
    pool = remote(base)
    try:
        await pool.start()
        await pool.wait_for(PoolState.READY, timeout_s=5.0)
        engine.health = 503
        status = await pool.wait_for(PoolState.FAILED, timeout_s=5.0)
        assert "HTTP 503" in status.detail
        with pytest.raises(EngineError) as caught:
            await pool.open_stream(CHAT)
        assert caught.value.code is ErrorCode.POOL_UNREADY
        engine.health = 200
        await pool.wait_for(PoolState.READY, timeout_s=5.0)
    finally:
        await pool.stop()


async def test_unreachable_engine_is_failed_with_a_reason() -> None:
    port = process.free_loopback_port()
    pool = remote(f"http://127.0.0.1:{port}/v1")
    try:
        await pool.start()
        status = await pool.wait_for(PoolState.FAILED, timeout_s=5.0)
    finally:
        await pool.stop()
    assert f"127.0.0.1:{port}/v1/models failed" in status.detail


async def test_missing_or_wrong_key_is_reported_by_variable_name(
    fake: tuple[FakeEngine, str],
) -> None:
    _, base = fake
    missing = remote(base, env={})
    wrong = remote(base, env={"REMOTE_KEY": "sk-wrong-key-000000"})
    try:
        await missing.start()
        await wrong.start()
        no_key = await missing.wait_for(PoolState.FAILED, timeout_s=5.0)
        bad_key = await wrong.wait_for(PoolState.FAILED, timeout_s=5.0)
    finally:
        await missing.stop()
        await wrong.stop()
    assert "REMOTE_KEY is not set" in no_key.detail
    assert "rejected the API key (HTTP 401)" in bad_key.detail
    assert "REMOTE_KEY" in bad_key.detail
    assert "sk-wrong-key-000000" not in bad_key.detail


async def test_model_must_be_listed_and_reload_switches_only_to_a_listed_one(
    fake: tuple[FakeEngine, str],
) -> None:
    engine, base = fake
    unlisted = remote(base, model="ghost")
    pool = remote(base)
    try:
        await unlisted.start()
        status = await unlisted.wait_for(PoolState.FAILED, timeout_s=5.0)
        assert "'ghost' is not served" in status.detail
        assert "demo, other" in status.detail

        await pool.start()
        await pool.wait_for(PoolState.READY, timeout_s=5.0)
        with pytest.raises(EngineError) as caught:
            await pool.reload("ghost")
        assert caught.value.code is ErrorCode.INVALID_PARAMS
        assert pool.descriptor.model == "demo"
        assert "other" in await pool.reload("other")
        assert pool.descriptor.model == "other"
        await collect(pool, CHAT)
        assert engine.bodies[-1]["model"] == "other"
    finally:
        await unlisted.stop()
        await pool.stop()


@pytest.mark.engine
async def test_streams_from_a_real_llama_cpp_server(
    demo_model_path: Path, engine_log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = LlamaCppSpec("local", f"file:{demo_model_path}", ctx=512, device_mask="cpu")
    local = LlamaCppEngine(spec, log_dir=engine_log_dir)
    try:
        await local.start()
        await local.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=60.0)
        assert local.base_url is not None and local.api_key
        monkeypatch.setenv("LOCAL_ENGINE_KEY", local.api_key)
        pool = OpenAIEngine(
            OpenAISpec("via-openai", f"{local.base_url}/v1", "demo", api_key_env="LOCAL_ENGINE_KEY")
        )
        try:
            await pool.start()
            await pool.wait_for(PoolState.READY, timeout_s=10.0)
            tokens, _ = await collect(pool, CHAT)
            assert tokens
            # llama-server closes a connection after a streamed answer while announcing
            # keep-alive: the next stream must not go out on that dead connection
            again, _ = await collect(pool, CHAT)
            assert again
        finally:
            await pool.stop()
    finally:
        await local.stop()


async def test_a_remote_that_stops_answering_is_probed_at_once_but_not_killed() -> None:
    """No response headers in time: the pool checks the remote now and shows it failed."""
    stalled = asyncio.Event()

    async def models(request: web.Request) -> web.Response:
        if stalled.is_set():
            await asyncio.sleep(30)
        return web.json_response({"object": "list", "data": [{"id": "demo"}]})

    async def complete(request: web.Request) -> web.Response:
        await asyncio.sleep(30)  # a prefill that never ends: no headers
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", complete)
    async with serve(app) as base:
        spec = OpenAISpec(
            pool_id="slow",
            base_url=f"{base}/v1",
            model="demo",
            health_interval_s=3600.0,  # only the timeout may trigger the probe
            health_timeout_s=0.5,
            decode_timeout_s=0.5,
        )
        pool = OpenAIEngine(spec, environ={})
        try:
            await pool.start()
            await pool.wait_for(PoolState.READY, timeout_s=5.0)
            stalled.set()
            with pytest.raises(EngineError) as caught:
                await pool.open_stream(CHAT)
            assert caught.value.code is ErrorCode.DECODE_TIMEOUT
            status = await pool.wait_for(PoolState.FAILED, timeout_s=3.0)
            assert "timed out" in status.detail
            stalled.clear()
            await pool.restart()
            assert (await pool.wait_for(PoolState.READY, timeout_s=5.0)).state is PoolState.READY
        finally:
            await pool.stop()
