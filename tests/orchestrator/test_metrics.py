"""The core's metrics: labelled children looked up once, the series a task leaves."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest

from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.contracts import TaskRequest
from app.orchestrator.metrics import OrchMetrics
from app.orchestrator.service import Orchestrator


def test_a_labelled_child_is_looked_up_once_and_kept() -> None:
    m = OrchMetrics()
    first = m.child(m.tokens_in, "mock", "1", "p0", "r0")
    assert m.child(m.tokens_in, "mock", "1", "p0", "r0") is first
    assert m.child(m.tokens_out, "mock", "1", "p0", "r0") is not first  # per collector
    first.inc(3)
    assert m.tokens_in.labels("mock", "1", "p0", "r0")._value.get() == 3


async def test_a_finished_task_leaves_its_counts_in_the_exposition() -> None:
    orch = Orchestrator([MockEngine(MockSpec("m0", tokens_per_s=0))])
    await orch.start()
    await asyncio.sleep(0.01)
    for _ in range(2):
        adm = orch.submit(TaskRequest(prompt="x", max_tokens=3))
        async for _event in orch.stream(str(adm.task_id)):
            pass
    await asyncio.sleep(0.01)
    text = generate_latest(orch.metrics.registry).decode()
    await orch.shutdown()
    lines = {line.split("{")[0] + "|" + line.rsplit(" ", 1)[1] for line in text.splitlines()
             if line.startswith(("tasks_enqueued_total{", "tasks_started_total{",
                                 "tokens_out_total{"))}  # fmt: skip
    assert lines == {"tasks_enqueued_total|2.0", "tasks_started_total|2.0", "tokens_out_total|6.0"}
    assert 'queue_depth{engine="mock"' in text and "kv_cache_usage_ratio{" in text
