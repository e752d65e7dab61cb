"""Upstream request bodies, error codes and budget headers (issue points 1-4)."""

from __future__ import annotations

import pytest

from app.engine_host.mock import MockSpec
from app.orchestrator.sessions import BudgetLimits
from tests.api.conftest import MakeApi


async def test_inputs_are_the_prompt_and_output_mode_is_ignored(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0))
    task_id = await api.submit(prompt=None, inputs=["Hello", "world"], output_mode="text")
    assert api.orch.task(task_id).prompt_start.startswith("Hello")
    both = await api.client.post("/v1/tasks", json={"prompt": "x", "inputs": ["y"]})
    assert both.status == 400
    assert "only one of 'prompt', 'messages' or 'inputs'" in (await both.json())["message"]


@pytest.mark.parametrize("engine", ["llamacpp", "vllm", "tgi", "triton"])
async def test_an_engine_no_pool_runs_is_a_placement_failure(
    make_api: MakeApi, engine: str
) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0))
    resp = await api.client.post("/v1/tasks", json={"prompt": "x", "engine": engine})
    assert resp.status == 503
    body = await resp.json()
    assert (body["code"], body["engine"]) == ("POOL_UNAVAILABLE", engine)


async def test_schema_errors_name_the_requested_engine_only_when_valid(make_api: MakeApi) -> None:
    api = await make_api()
    named = await api.client.post("/v1/tasks", json={"engine": "vllm", "max_tokens": 0})
    assert named.status == 400 and (await named.json())["engine"] == "vllm"
    bogus = await api.client.post("/v1/tasks", json={"engine": "<script>", "max_tokens": 1})
    assert bogus.status == 400 and "engine" not in await bogus.json()


async def test_pin_to_a_missing_pool_is_invalid_params(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0))
    pin = {"mode": "pin", "pin_pool_id": "nope"}
    resp = await api.client.post("/v1/tasks", json={"prompt": "x", "placement": pin})
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == "INVALID_PARAMS" and "m0" in body["message"]


async def test_pin_to_an_unready_pool_is_pool_unready(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0), MockSpec("slow", start_delay_ms=60_000))
    pin = {"mode": "pin", "pin_pool_id": "slow"}
    resp = await api.client.post("/v1/tasks", json={"prompt": "x", "placement": pin})
    assert resp.status == 503 and (await resp.json())["code"] == "POOL_UNREADY"


async def test_drop_lru_full_queue_answers_queue_full_drop_lru(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=1), queue_capacity=1, full_policy="drop-lru")
    await api.submit()
    statuses = []
    for _ in range(3):
        resp = await api.client.post("/v1/tasks", json={"prompt": "x"})
        statuses.append((resp.status, (await resp.json()).get("code")))
    assert statuses[-1] == (429, "QUEUE_FULL_DROP_LRU")


async def test_admission_in_a_budgeted_session_carries_budget_headers(make_api: MakeApi) -> None:
    budgets = BudgetLimits(tokens=1000, time_ms=60_000, cost=2.5, cost_per_1k_tokens=1.0)
    api = await make_api(MockSpec("m0", tokens_per_s=0), budgets=budgets)
    resp = await api.client.post("/v1/tasks", json={"prompt": "x", "session_id": "s1"})
    assert resp.status == 202
    assert resp.headers["X-Budget-Tokens-Remaining"] == "1000"
    assert resp.headers["X-Budget-Time-Remaining-Ms"] == "60000"
    assert resp.headers["X-Budget-Cost-Remaining"] == "2.5"
    plain = await api.client.post("/v1/tasks", json={"prompt": "x"})
    assert not [h for h in plain.headers if h.startswith("X-Budget")]
    session = await (await api.client.get("/v1/sessions/s1")).json()
    assert session["tokens_budget_remaining"] == session["budgets"]["tokens_remaining"] == 1000
    assert session["time_budget_remaining_ms"] == 60_000
    assert session["cost_budget_remaining"] == 2.5
