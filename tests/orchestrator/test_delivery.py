"""Delivered tokens: end.tokens_out and budgets count what the reader got; a task
waits for its reader (or a short grace) before it decodes."""

from __future__ import annotations

import asyncio

from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.contracts import TaskRequest
from app.orchestrator.events import END, STARTED, TOKEN, TaskEvent
from app.orchestrator.service import Orchestrator, OrchestratorConfig
from app.orchestrator.sessions import BudgetLimits
from tests.orchestrator.support import end_of


async def _orch(spec: MockSpec, **cfg: object) -> tuple[Orchestrator, MockEngine]:
    engine = MockEngine(spec)
    orch = Orchestrator([engine], OrchestratorConfig(**cfg))  # type: ignore[arg-type]
    await orch.start()
    await asyncio.sleep(0.01)
    return orch, engine


async def test_a_cancel_counts_only_the_tokens_the_reader_took() -> None:
    orch, _ = await _orch(MockSpec("a", tokens_per_s=0), budgets=BudgetLimits(tokens=10_000))
    adm = orch.submit(TaskRequest(prompt="hello", max_tokens=500, session_id="s1"))
    task = str(adm.task_id)
    handle = orch.open_stream(task)
    got = [await handle.next() for _ in range(4)]
    assert [e.kind for e in got if e] == [STARTED, TOKEN, TOKEN, TOKEN]
    await asyncio.sleep(0.05)  # the engine fills the channel ahead of the reader
    orch.cancel(task)
    rest: list[TaskEvent] = []
    while (event := await handle.next()) is not None:
        rest.append(event)
    assert [e.kind for e in rest] == [END]
    assert end_of(rest, 0)["tokens_out"] == 3 and end_of(rest, 0)["finish_reason"] == "canceled"
    await asyncio.sleep(0.05)
    view = orch.task(task)
    assert view.tokens_out == 3
    budgets = orch.session("s1").budgets
    assert budgets.tokens_remaining == 10_000 - view.tokens_in - 3
    await orch.shutdown()


async def test_a_task_does_not_decode_before_its_reader_comes() -> None:
    orch, engine = await _orch(MockSpec("a", tokens_per_s=0), stream_start_grace_s=5.0)
    task = str(orch.submit(TaskRequest(prompt="x", max_tokens=3)).task_id)
    await asyncio.sleep(0.1)
    assert engine.opened_streams == 0 and orch.task(task).state == "dispatched"
    events = [e async for e in orch.stream(task)]
    assert [e.kind for e in events] == [STARTED, TOKEN, TOKEN, TOKEN, END]
    assert engine.opened_streams == 1
    await orch.shutdown()


async def test_after_the_grace_a_task_decodes_without_a_reader() -> None:
    orch, engine = await _orch(MockSpec("a", tokens_per_s=0), stream_start_grace_s=0.05)
    task = str(orch.submit(TaskRequest(prompt="x", max_tokens=3)).task_id)
    await asyncio.sleep(0.2)
    assert engine.opened_streams == 1 and orch.task(task).state == "done"
    events = [e async for e in orch.stream(task)]
    tokens = [e for e in events if e.kind == TOKEN]
    assert len(tokens) == end_of(events)["tokens_out"] == 3
    await orch.shutdown()


async def test_a_late_reader_of_an_unopened_task_gets_a_consistent_account() -> None:
    orch, _ = await _orch(
        MockSpec("a", tokens_per_s=0),
        stream_start_grace_s=0.02,
        unopened_stream_timeout_s=0.2,
    )
    task = str(orch.submit(TaskRequest(prompt="x", max_tokens=200)).task_id)
    await asyncio.sleep(0.4)
    assert orch.task(task).state == "canceled"
    events = [e async for e in orch.stream(task)]
    tokens = [e for e in events if e.kind == TOKEN]
    assert [e.kind for e in events] == [STARTED, END]
    assert end_of(events)["tokens_out"] == len(tokens) == orch.task(task).tokens_out == 0
    await orch.shutdown()
