"""Upstream control-plane shapes: capabilities, reload, pool health (issue points 5-6)."""

from __future__ import annotations

from app.engine_host.mock import MockSpec
from app.orchestrator.contracts import MAX_TOKENS_OUT
from tests.api.conftest import MakeApi, parse_frames
from tests.api.upstream import load_yaml


async def test_capabilities_offer_upstream_names_and_the_alias(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("a", tokens_per_s=0, ctx=2048))
    caps = await (await api.client.get("/v1/capabilities")).json()
    engine = caps["engines"][0]
    assert engine["supported_workloads"] == engine["workloads"] == ["completion"]
    assert engine["max_tokens_out"] == min(2048, MAX_TOKENS_OUT)
    doc = await (await api.client.get("/openapi.json")).json()
    props = doc["components"]["schemas"]["EngineCapability"]["properties"]
    assert props["workloads"]["deprecated"] is True
    assert "deprecated" not in props["supported_workloads"]


async def test_reload_takes_new_model_ref_and_a_failure_keeps_the_old_model(
    make_api: MakeApi,
) -> None:
    api = await make_api(MockSpec("a", tokens_per_s=0, model="old"))
    failed = await api.client.post("/v1/pools/a/reload", json={"new_model_ref": "bad-model"})
    assert failed.status == 409
    body = await failed.json()
    assert (body["code"], body["pool_id"]) == ("RELOAD_FAILED", "a")
    assert "cannot load model 'bad-model'" in body["message"]
    task_id = await api.submit(max_tokens=2)  # the old model still serves
    frames = parse_frames(await (await api.client.get(f"/v1/tasks/{task_id}/stream")).read())
    assert frames[-1][0] == "end"
    ok = await api.client.post("/v1/pools/a/reload", json={"new_model_ref": "new"})
    assert ok.status == 200 and (await ok.json())["model"] == "new"


async def test_pool_health_carries_the_upstream_metrics_object(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("a", tokens_per_s=0, slots=2))
    health = await (await api.client.get("/v1/pools/a/health")).json()
    assert {"live", "ready", "draining", "slots_busy"} <= set(health)
    metrics = health["metrics"]
    assert metrics["slots_total"] == 2 and metrics["queue_depth"] == 0
    assert metrics["kv_cache_usage_ratio"] == 0.0
    upstream = load_yaml("contracts/openapi/control.yaml")["components"]["schemas"]["PoolHealth"]
    assert upstream["properties"]["metrics"]["type"] == "object"
