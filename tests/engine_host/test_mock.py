"""The mock engine's states follow the pool table like every other engine."""

from __future__ import annotations

import asyncio

import pytest

from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.lifecycle import IllegalTransition, PoolState
from app.orchestrator.ports import PoolStatus


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
