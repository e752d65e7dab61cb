"""The /metrics exposition against upstream's ``ci/metrics.lint.json``.

A short life of the server (tasks done, canceled, refused, a GPU tick) must give
every required metric with its type and required labels, and keep each label
within the linter's cardinality budget. The catalog metrics are emitted by the
model store, so that part runs over a real catalog in ``test_catalog.py``;
here they must at least be declared with the right type.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.api import ApiSettings, make_app
from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.ports import GpuInfo, GpuInventory
from app.orchestrator.service import Orchestrator, OrchestratorConfig
from tests.api.conftest import Api, wait_until
from tests.api.upstream import load_json

LINT = "ci/metrics.lint.json"
CATALOG_METRICS = {"catalog_verifications_total", "model_state"}
SUFFIX_OF = {"counter": "_total", "gauge": "", "histogram": "_bucket"}


class OneGpu:
    """A GPU probe with one device (the NVML boundary)."""

    def snapshot(self) -> GpuInventory:
        gpu = GpuInfo(index=0, uuid=None, name="test", vram_total_bytes=8 << 30,
                      vram_free_bytes=6 << 30, vram_used_bytes=2 << 30, utilization_pct=40.0,
                      compute_capability=None, temperature_c=None, power_w=None)  # fmt: skip
        return GpuInventory(gpus=(gpu,), at=1.0)


@pytest.fixture
async def exposition(aiohttp_client: Any) -> AsyncIterator[str]:
    """Return the /metrics text after a short life of a served orchestrator."""
    specs = (MockSpec("g0", tokens_per_s=0, device_mask="0", engine="llamacpp"),
             MockSpec("slow", tokens_per_s=1))  # fmt: skip
    engines = [MockEngine(s) for s in specs]
    orch = Orchestrator(engines, OrchestratorConfig(queue_capacity=1), gpu_probe=OneGpu())
    await orch.start()
    await wait_until(lambda: all(e.status.state is PoolState.READY for e in engines))
    app = make_app(orch, ApiSettings())
    api = Api(await aiohttp_client(app), orch, engines, app)
    yield await _short_life(api)
    await orch.shutdown(deadline_s=0.1)


async def _short_life(api: Api) -> str:
    done = await api.submit(max_tokens=2, engine="llamacpp")
    await (await api.client.get(f"/v1/tasks/{done}/stream")).read()
    pin = {"mode": "pin", "pin_pool_id": "slow"}
    await api.submit(placement=pin)  # takes the slot
    queued = await api.submit(placement=pin, priority="batch")
    refused = await api.client.post(
        "/v1/tasks", json={"prompt": "x", "placement": pin, "priority": "batch"}
    )
    assert refused.status == 429
    await api.client.post(f"/v1/tasks/{queued}/cancel")
    await asyncio.sleep(0.05)
    return await (await api.client.get("/metrics")).text()


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_every_required_metric_has_its_type_and_labels(exposition: str) -> None:
    families = _families(exposition)
    for rule in load_json(LINT)["required_metrics"]:
        name, kind = rule["name"], rule["type"]
        family = families.get(name.removesuffix("_total") if kind == "counter" else name)
        assert family is not None, f"{name} missing from /metrics"
        assert family.type == kind, f"{name} is a {family.type}, the linter wants a {kind}"
        if name in CATALOG_METRICS:
            continue
        samples = [s for s in family.samples if s.name == family.name + SUFFIX_OF[kind]]
        assert samples, f"{name} has no sample after a task ran"
        for sample in samples:
            labels = set(sample.labels) - {"le"}
            assert set(rule["labels"]) <= labels, f"{name} lacks {set(rule['labels']) - labels}"


async def test_labels_stay_within_the_cardinality_budget(exposition: str) -> None:
    text = exposition
    budget = load_json(LINT)["label_cardinality_budget"]
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, value in sample.labels.items():
                values.setdefault(label, set()).add(value)
    assert "task_id" not in values and "correlation_id" not in values
    for label, limit in budget.items():
        assert len(values.get(label, ())) <= limit, (label, values[label])


async def test_placement_outcomes_use_the_upstream_names(exposition: str) -> None:
    families = _families(exposition)
    outcomes = {s.labels["outcome"] for s in families["placement_decisions"].samples}
    assert "assigned" in outcomes and outcomes <= {"assigned", "refused", "no_capacity"}
    rejected = {s.labels["reason"] for s in families["tasks_rejected"].samples}
    assert rejected == {"ADMISSION_REJECT"}  # the typed error code of the 429
