"""Data plane: admission answers, validation, errors, tasks, sessions, correlation ids."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid

import pytest

from app.api import ApiSettings
from app.engine_host.mock import MockEngine, MockSpec
from tests.api.conftest import MakeApi, wait_until


async def test_enqueue_returns_admission(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0))
    task_id = str(uuid.uuid4())
    resp = await api.client.post(
        "/v1/tasks", json={"task_id": task_id, "prompt": "hi", "max_tokens": 2, "seed": 1}
    )
    assert resp.status == 202
    body = await resp.json()
    assert body == {
        "task_id": task_id, "queue_position": 0, "predicted_start_ms": 0, "backoff_ms": 0,
        "pool_id": "m0", "session_id": None,
    }  # fmt: skip
    again = await api.client.post("/v1/tasks", json={"task_id": task_id, "prompt": "hi"})
    assert again.status == 409 and (await again.json())["code"] == "CONFLICT"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"prompt": "x", "max_tokens": 0}, ["max_tokens"]),
        ({"prompt": "x", "temperature": 9, "priority": "urgent"}, ["priority", "temperature"]),
        ({"prompt": "x", "bogus": 1}, ["bogus"]),
        ({"prompt": "x", "placement": {"mode": "pin"}}, ["placement"]),
        (
            {"prompt": "x", "messages": [{"role": "user", "content": "y"}]},
            ["body: give only one of 'prompt', 'messages' or 'inputs'"],
        ),
        ([1, 2], ["body"]),
    ],
)
async def test_schema_violations_name_the_fields(
    make_api: MakeApi, body: object, fields: list[str]
) -> None:
    api = await make_api()
    resp = await api.client.post("/v1/tasks", json=body)
    assert resp.status == 400
    err = await resp.json()
    assert err["code"] == "INVALID_PARAMS" and err["retriable"] is False
    for field in fields:
        assert field in err["message"]
    assert "Traceback" not in err["message"] and ".py" not in err["message"]


async def test_bad_json_empty_body_and_size_limit(make_api: MakeApi) -> None:
    api = await make_api(settings=ApiSettings(max_body_bytes=1 << 20))
    bad = await api.client.post("/v1/tasks", data=b'{"prompt": ')
    assert bad.status == 400 and "not valid JSON" in (await bad.json())["message"]
    empty = await api.client.post("/v1/tasks", data=b"")
    assert empty.status == 400 and "empty" in (await empty.json())["message"]
    huge = b'{"prompt": "' + b"x" * (1 << 20) + b'"}'
    too_big = await api.client.post("/v1/tasks", data=io.BytesIO(huge))
    assert too_big.status == 413
    assert (await too_big.json())["code"] == "INVALID_PARAMS"


async def test_guardrail_and_no_pool_refusals(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0, ctx=64))
    reject = await api.client.post("/v1/tasks", json={"prompt": "x" * 400, "max_tokens": 100})
    assert reject.status == 400
    assert (await reject.json())["code"] == "ADMISSION_REJECT"
    nopool = await api.client.post("/v1/tasks", json={"prompt": "x", "model_ref": "other"})
    assert nopool.status == 503
    body = await nopool.json()
    assert body["code"] == "POOL_UNAVAILABLE" and "no pool" in body["message"]


async def test_unready_pool_gives_pool_unready_with_retry_after(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("slow", start_delay_ms=60_000))
    resp = await api.client.post("/v1/tasks", json={"prompt": "x"})
    assert resp.status == 503
    assert (await resp.json())["code"] == "POOL_UNREADY"
    assert int(resp.headers["Retry-After"]) >= 1


async def test_backpressure_burst_gives_only_202_and_429(make_api: MakeApi) -> None:
    capacity = 3
    api = await make_api(MockSpec("m0", tokens_per_s=1), queue_capacity=capacity)
    burst = [api.client.post("/v1/tasks", json={"prompt": "x"}) for _ in range(10 * capacity)]
    responses = await asyncio.gather(*burst)
    statuses = [r.status for r in responses]
    assert set(statuses) == {202, 429}
    assert statuses.count(202) == capacity + 1  # one dispatched to the single slot
    for resp in responses:
        if resp.status != 429:
            continue
        assert int(resp.headers["Retry-After"]) >= 1
        assert int(resp.headers["X-Backoff-Ms"]) >= 0
        body = await resp.json()
        assert {"code", "message", "policy_label", "retriable", "retry_after_ms"} <= set(body)
        assert body["policy_label"] == "reject" and body["retriable"] is True
        assert int(resp.headers["Retry-After"]) == max(1, -(-body["retry_after_ms"] // 1000))


async def test_task_view_and_list(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0))
    task_id = await api.submit(max_tokens=3)
    await (await api.client.get(f"/v1/tasks/{task_id}/stream")).read()
    await wait_until(lambda: api.orch.live_task_count() == 0)
    view = await (await api.client.get(f"/v1/tasks/{task_id}")).json()
    assert view["state"] == "done" and view["pool_id"] == "m0" and view["tokens_out"] == 3
    assert view["identity"] == "localhost" and view["decision_summary"]
    assert {"queued_ms", "ttft_ms", "decode_time_ms"} <= set(view)
    listed = await (await api.client.get("/v1/tasks?limit=5")).json()
    assert [t["task_id"] for t in listed] == [task_id]
    assert (await api.client.get("/v1/tasks/unknown")).status == 404
    assert (await api.client.get("/v1/tasks?limit=0")).status == 400
    assert (await api.client.get("/v1/tasks?limit=abc")).status == 400


async def test_sessions_get_and_delete(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0))
    task_id = await api.submit(max_tokens=2, session_id="s-1")
    await (await api.client.get(f"/v1/tasks/{task_id}/stream")).read()
    await wait_until(lambda: api.orch.live_task_count() == 0)
    info = await (await api.client.get("/v1/sessions/s-1")).json()
    assert info["session_id"] == "s-1" and info["turns"] == 1 and info["last_pool_id"] == "m0"
    assert (await api.client.delete("/v1/sessions/s-1")).status == 204
    assert (await api.client.get("/v1/sessions/s-1")).status == 404
    assert (await api.client.delete("/v1/sessions/s-1")).status == 404


async def test_correlation_id_echoed_validated_and_logged(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0))
    caplog.set_level(logging.DEBUG)
    sent = await api.client.post(
        "/v1/tasks", json={"prompt": "x", "max_tokens": 1}, headers={"X-Correlation-Id": "req.1-A"}
    )
    assert sent.headers["X-Correlation-Id"] == "req.1-A"
    task_id = (await sent.json())["task_id"]
    cid = "req.1-A"
    assert api.orch.task(task_id).correlation_id == cid
    mine = [
        r for r in caplog.records if getattr(r, "fields", {}).get("correlation_id") == "req.1-A"
    ]
    assert any(r.name == "llama_orch.api" for r in mine)
    assert any(r.name == "llama_orch.core" for r in mine)
    for bad in ("has space", "x" * 129, "semi;colon"):
        resp = await api.client.get("/v1/pools", headers={"X-Correlation-Id": bad})
        assert str(uuid.UUID(resp.headers["X-Correlation-Id"])) == resp.headers["X-Correlation-Id"]
    for path in ("/v1/pools", "/nope", "/v1/tasks/zzz"):
        resp = await api.client.get(path)
        assert uuid.UUID(resp.headers["X-Correlation-Id"]).version == 4


async def test_accepted_submissions_log_at_debug_and_control_changes_at_info(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0))
    caplog.set_level(logging.INFO, logger="llama_orch.api")
    assert (await api.client.post("/v1/tasks", json={"prompt": "x"})).status == 202
    assert (await api.client.post("/v1/tasks", json={"prompt": "x", "bogus": 1})).status == 400
    assert (await api.client.post("/v1/pools/m0/drain", json={"deadline_ms": 50})).status == 202
    lines = [r.getMessage() for r in caplog.records if r.name == "llama_orch.api"]
    assert [line.split(" in ")[0] for line in lines] == [
        "POST /v1/tasks -> 400",  # a refusal is worth a line; the accepted task logs its end
        "POST /v1/pools/m0/drain -> 202",
    ]


async def test_unknown_routes_and_methods(make_api: MakeApi) -> None:
    api = await make_api()
    for path in ("/v1/replicasets", "/nope"):
        resp = await api.client.get(path)
        assert resp.status == 404
        assert (await resp.json())["code"] == "NOT_FOUND"
    wrong = await api.client.put("/v1/tasks")
    assert wrong.status == 405 and "POST" in wrong.headers["Allow"]
    assert (await wrong.json())["code"] == "METHOD_NOT_ALLOWED"


class ExplodingEngine(MockEngine):
    """An engine whose reload fails with an unexpected exception."""

    async def reload(self, model_ref: str) -> str:
        raise RuntimeError("boom in /secret/path/engine.py")


async def test_unexpected_errors_are_a_generic_500(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    api = await make_api(engine_class=ExplodingEngine)
    caplog.set_level(logging.ERROR)
    resp = await api.client.post("/v1/pools/m0/reload", json={"model_ref": "x"})
    assert resp.status == 500
    body = await resp.json()
    assert body["code"] == "INTERNAL" and "secret" not in body["message"]
    assert resp.headers["X-Correlation-Id"] in body["message"]
    assert any("boom" in (r.exc_text or "") or r.exc_info for r in caplog.records)
