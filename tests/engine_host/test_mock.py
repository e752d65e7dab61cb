"""The mock engine's states follow the pool table like every other engine."""

from __future__ import annotations

import asyncio

import pytest

from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.contracts import ChatMessage
from app.orchestrator.lifecycle import IllegalTransition, PoolState
from app.orchestrator.ports import EngineRequest, PoolStatus


async def test_stop_from_ready_goes_through_stopping() -> None:
    engine = MockEngine(MockSpec("m0"))
    seen: list[PoolState] = []
    engine.add_listener(lambda status: seen.append(status.state))
    await engine.start()
    await engine.wait_for(PoolState.READY, timeout_s=5)
    await engine.stop()
    assert seen == [PoolState.STARTING, PoolState.READY, PoolState.STOPPING, PoolState.STOPPED]
    await engine.stop()
    assert seen[-1] is PoolState.STOPPED and len(seen) == 4


async def test_a_stopped_mock_cannot_be_marked_failed() -> None:
    engine = MockEngine(MockSpec("m0"))
    statuses: list[PoolStatus] = []
    engine.add_listener(statuses.append)
    with pytest.raises(IllegalTransition, match="stopped -> failed"):
        engine.fail()
    await asyncio.sleep(0)
    assert engine.status.state is PoolState.STOPPED and statuses == []


async def collect(engine: MockEngine, request: EngineRequest) -> tuple[int, str | None]:
    stream = await engine.open_stream(request)
    count = 0
    async for _token in stream:
        count += 1
    return count, stream.finish_reason


async def test_an_answer_stops_with_length_when_the_context_is_full() -> None:
    msgs = (ChatMessage(role="user", content="x" * 392),)  # 400 chars with framing
    exact = MockEngine(MockSpec("m0", ctx=512, tokens_per_s=0))
    dense = MockEngine(MockSpec("m1", ctx=512, tokens_per_s=0, chars_per_token=2.0))
    for engine in (exact, dense):
        await engine.start()
        await engine.wait_for(PoolState.READY, timeout_s=5)
    request = EngineRequest(None, msgs, max_tokens=400, temperature=0.0, seed=1)
    assert await collect(exact, request) == (400, "length")  # 100 + 400 fits in 512
    assert await collect(dense, request) == (312, "length")  # 200 prompt tokens + 312 = 512
    short = EngineRequest(None, msgs, max_tokens=10, temperature=0.0, seed=1)
    assert await collect(dense, short) == (10, "length")
