"""GET /v1/placement/decisions: admissions and refusals, as structured records."""

from __future__ import annotations

import asyncio

from app.engine_host.mock import MockSpec
from tests.api.conftest import MakeApi

LIVE = ("dispatched", "streaming")


async def test_a_429_shows_as_a_refusal(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("a", tokens_per_s=5), queue_capacity=1)
    admitted = [await api.submit(max_tokens=50) for _ in range(2)]
    refused = await api.client.post("/v1/tasks", json={"prompt": "x", "max_tokens": 50})
    assert refused.status == 429
    newest, *older = await (await api.client.get("/v1/placement/decisions?limit=3")).json()
    assert [(d["task_id"], d["outcome"], d["pool_id"]) for d in older] == [
        (admitted[1], "admitted", "a"),
        (admitted[0], "admitted", "a"),
    ]
    assert newest["outcome"] == "refused" and newest["pool_id"] is None
    assert newest["refusal_code"] == (await refused.json())["code"] == "ADMISSION_REJECT"
    assert newest["refusal_reason"] == "queue_full"
    assert [(c["pool_id"], c["outcome"]) for c in newest["candidates"]] == [("a", "refused")]


async def test_candidates_carry_their_rank_key(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("a", tokens_per_s=2), MockSpec("b", tokens_per_s=2))
    await api.submit(max_tokens=20)  # a is busy now
    await api.submit(max_tokens=20)
    (record,) = await (await api.client.get("/v1/placement/decisions?limit=1")).json()
    assert (record["outcome"], record["pool_id"], record["deciding_key"]) == (
        "admitted", "b", "starts_now",
    )  # fmt: skip
    by_id = {c["pool_id"]: c for c in record["candidates"]}
    assert (by_id["b"]["outcome"], by_id["b"]["rank"], by_id["b"]["rank_key"]) == (
        "selected", 0, "starts_now",
    )  # fmt: skip
    assert (by_id["a"]["outcome"], by_id["a"]["rank"], by_id["a"]["rank_key"]) == (
        "outranked", 1, "starts_now",
    )  # fmt: skip


async def test_resume_cancels_the_drain_deadline(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("a", tokens_per_s=0, hang_after_tokens=1))
    task = await api.submit(max_tokens=5)
    assert (await api.client.post("/v1/pools/a/drain", json={"deadline_ms": 50})).status == 202
    assert (await api.client.post("/v1/pools/a/resume")).status == 200
    assert (await api.client.post("/v1/pools/a/drain", json={"deadline_ms": 60_000})).status == 202
    await asyncio.sleep(0.3)
    assert (await (await api.client.get(f"/v1/tasks/{task}")).json())["state"] in LIVE


async def test_the_openapi_document_describes_the_decision_fields(make_api: MakeApi) -> None:
    api = await make_api()
    schemas = (await (await api.client.get("/openapi.json")).json())["components"]["schemas"]
    decision, candidate = schemas["DecisionRecord"], schemas["CandidateRecord"]
    assert decision["properties"]["outcome"]["enum"] == ["admitted", "refused"]
    assert {"outcome", "pool_id"} <= set(decision["required"])
    assert {"refusal_code", "refusal_reason", "deciding_key"} <= set(decision["properties"])
    assert candidate["properties"]["outcome"]["enum"] == [
        "selected", "outranked", "filtered", "refused",
    ]  # fmt: skip
    assert {"rank_key", "rank", "filter"} <= set(candidate["properties"])
