"""Drain deadlines: a resume or a new drain replaces the pending deadline."""

from __future__ import annotations

import asyncio

from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.contracts import TaskRequest
from app.orchestrator.service import Orchestrator


async def _hanging_task() -> tuple[Orchestrator, str]:
    orch = Orchestrator([MockEngine(MockSpec("a", tokens_per_s=0, hang_after_tokens=1))])
    await orch.start()
    await asyncio.sleep(0.01)
    task = str(orch.submit(TaskRequest(prompt="x", max_tokens=5)).task_id)
    orch.open_stream(task)  # a reader is there: the task decodes at once
    return orch, task


async def test_resume_then_a_long_drain_keeps_the_first_deadline_from_firing() -> None:
    orch, task = await _hanging_task()
    orch.drain("a", 50)
    orch.resume("a")
    orch.drain("a", 60_000)
    await asyncio.sleep(0.2)
    assert orch.task(task).state == "streaming"
    await orch.shutdown(deadline_s=0.1)


async def test_a_second_drain_replaces_the_first_deadline() -> None:
    orch, task = await _hanging_task()
    orch.drain("a", 50)
    orch.drain("a", 60_000)
    await asyncio.sleep(0.2)
    assert orch.task(task).state == "streaming"
    orch.drain("a", 10)
    await asyncio.sleep(0.1)
    assert orch.task(task).state == "canceled"
    await orch.shutdown()
