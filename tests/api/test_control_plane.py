"""Control plane and observability: capabilities, pools, health, drain, reload, decisions."""

from __future__ import annotations

import asyncio

from app.api import ApiSettings
from app.engine_host.mock import MockSpec
from app.orchestrator.contracts import API_VERSION
from tests.api.conftest import MakeApi, wait_until


async def test_capabilities_match_openapi_and_settings(make_api: MakeApi) -> None:
    settings = ApiSettings(sse_heartbeat_ms=500, auth_token="t0k3n-abc")
    api = await make_api(
        MockSpec("a", tokens_per_s=0, ctx=2048, slots=2), MockSpec("b", ctx=8192), settings=settings
    )
    auth = {"Authorization": "Bearer t0k3n-abc"}
    caps = await (await api.client.get("/v1/capabilities", headers=auth)).json()
    doc = await (await api.client.get("/openapi.json", headers=auth)).json()
    assert caps["api_version"] == doc["info"]["version"] == API_VERSION
    assert caps["engines"] == [
        {"engine": "mock", "engine_version": "mock-1", "ctx_max": 8192,
         "supported_workloads": ["completion"], "max_tokens_out": 8192,
         "workloads": ["completion"], "concurrency": 3}
    ]  # fmt: skip
    assert caps["rate_limits"] == {"queue_capacity": 16, "full_policy": "reject"}
    assert caps["features"] == {
        "placement_overrides": True, "cancel_on_disconnect": True, "heartbeat": True,
        "micro_batch": False, "auth_required": True,
    }  # fmt: skip


async def test_pools_and_health(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("a", tokens_per_s=0), MockSpec("b", tokens_per_s=0))
    pools = await (await api.client.get("/v1/pools")).json()
    assert [p["pool_id"] for p in pools] == ["a", "b"]
    health = await (await api.client.get("/v1/pools/a/health")).json()
    assert health == {
        "pool_id": "a", "live": True, "ready": True, "draining": False, "state": "ready",
        "detail": "", "queue": {"interactive": 0, "batch": 0}, "slots_busy": 0,
        "slots_total": 1, "vram_total_bytes": None, "vram_free_bytes": None,
        "gpu_utilization": None,
        "metrics": {
            "queue_depth": 0, "slots_busy": 0, "slots_total": 1, "kv_cache_usage_ratio": 0.0,
            "tokens_per_s": None, "first_token_ms": None, "gpu_utilization": None,
            "vram_free_bytes": None, "crashes_recent": 0,
        },
    }  # fmt: skip
    assert (await api.client.get("/v1/pools/zzz/health")).status == 404


async def test_drain_stops_admissions_and_resume_reopens(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("a", tokens_per_s=0, hang_after_tokens=1))
    running = await api.submit(max_tokens=5)
    resp = await api.client.post("/v1/pools/a/drain", json={"deadline_ms": 50})
    assert resp.status == 202
    assert await resp.json() == {"pool_id": "a", "draining": True, "deadline_ms": 50}
    health = await (await api.client.get("/v1/pools/a/health")).json()
    assert health["draining"] is True and health["ready"] is False
    refused = await api.client.post("/v1/tasks", json={"prompt": "x"})
    assert refused.status == 503 and (await refused.json())["code"] == "POOL_UNAVAILABLE"
    await wait_until(lambda: api.orch.task(running).state == "canceled")
    resumed = await api.client.post("/v1/pools/a/resume")
    assert resumed.status == 200 and (await resumed.json())["draining"] is False
    await api.submit(max_tokens=1)
    assert (await api.client.post("/v1/pools/zzz/drain")).status == 404
    bad = await api.client.post("/v1/pools/a/drain", json={"deadline_ms": -1})
    assert bad.status == 400 and "deadline_ms" in (await bad.json())["message"]


async def test_drain_without_body_uses_the_default_deadline(make_api: MakeApi) -> None:
    api = await make_api()
    resp = await api.client.post("/v1/pools/m0/drain")
    assert resp.status == 202 and (await resp.json())["deadline_ms"] == 30_000


async def test_reload_reports_success_and_rollback(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("a", tokens_per_s=0, model="old"))
    bad = await api.client.post("/v1/pools/a/reload", json={"model_ref": "bad-model"})
    assert bad.status == 409
    body = await bad.json()
    assert body["code"] == "RELOAD_FAILED" and "still serving old" in body["message"]
    assert (await (await api.client.get("/v1/pools")).json())[0]["model"] == "old"
    good = await api.client.post("/v1/pools/a/reload", json={"model_ref": "new"})
    assert (await good.json())["ok"] is True
    assert (await (await api.client.get("/v1/pools")).json())[0]["model"] == "new"
    missing = await api.client.post("/v1/pools/a/reload", json={})
    assert missing.status == 400 and "model_ref" in (await missing.json())["message"]
    assert (await api.client.post("/v1/pools/zz/reload", json={"model_ref": "x"})).status == 404


async def test_placement_decisions_with_limit(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("a", tokens_per_s=0), MockSpec("b", tokens_per_s=0))
    ids = [await api.submit(max_tokens=1, placement={"avoid_pools": ["a"]}) for _ in range(3)]
    decisions = await (await api.client.get("/v1/placement/decisions?limit=2")).json()
    assert [d["task_id"] for d in decisions] == ids[::-1][:2]
    first = decisions[0]
    assert first["selected_pool_id"] == "b"
    assert any(c["pool_id"] == "a" and c["filter"] == "avoided" for c in first["candidates"])
    assert len(await (await api.client.get("/v1/placement/decisions")).json()) == 3
    for limit in ("0", "501", "x"):
        resp = await api.client.get(f"/v1/placement/decisions?limit={limit}")
        assert resp.status == 400 and "limit" in (await resp.json())["message"]


async def test_metrics_exposition(make_api: MakeApi) -> None:
    api = await make_api()
    task_id = await api.submit(max_tokens=2)
    await (await api.client.get(f"/v1/tasks/{task_id}/stream")).read()
    await asyncio.sleep(0.01)
    resp = await api.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    labels = 'engine="mock",engine_version="mock-1",pool_id="m0",priority="interactive"'
    assert f'tasks_enqueued_total{{{labels},replica_id="r0"}} 1.0' in text
    assert 'queue_depth{engine="mock",engine_version="mock-1",pool_id="m0"' in text
    assert "process_resident_memory_bytes" in text
