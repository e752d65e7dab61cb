"""Answers of the routes both contracts share, validated against upstream's schemas.

The upstream OpenAPI 3.0 documents are loaded as JSON Schema (draft 7, with
``$ref`` resolved inside the document). Our additions (extra keys) are allowed,
as the upstream schemas allow them; the differences listed here are stripped or
skipped with their reason (docs/API.md, "Differences from the upstream contract").
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft7Validator

from app.engine_host.mock import MockSpec
from app.orchestrator.sessions import BudgetLimits
from tests.api.conftest import Api, MakeApi, parse_frames
from tests.api.upstream import load_yaml

DATA = "contracts/openapi/data.yaml"
CONTROL = "contracts/openapi/control.yaml"
NULL_MEANS_UNSET = "the SSE metrics frame sends null for a budget that is not set"
SSE_SCHEMAS = {"started": "SSEStarted", "token": "SSEToken", "metrics": "SSEMetrics",
               "end": "SSEEnd", "error": "SSEError"}  # fmt: skip


def check(document: str, schema: str, instance: Any) -> None:
    """Assert ``instance`` validates against ``components.schemas[schema]`` of ``document``."""
    doc = load_yaml(document)
    validator = Draft7Validator({**doc, "$ref": f"#/components/schemas/{schema}"})
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in
              validator.iter_errors(instance)]  # fmt: skip
    assert not errors, f"{schema}: {errors}"


def _without_nulls(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if v is not None}


async def _llama(make_api: MakeApi, **spec: Any) -> Api:
    budgets = BudgetLimits(tokens=5000, time_ms=600_000)
    pool = MockSpec("llama0", tokens_per_s=0, engine="llamacpp", **spec)
    return await make_api(pool, budgets=budgets, queue_capacity=1)


async def test_admission_session_and_stream_validate(make_api: MakeApi) -> None:
    api = await _llama(make_api)
    body = {"prompt": "hi", "engine": "llamacpp", "session_id": "s1", "max_tokens": 3}
    resp = await api.client.post("/v1/tasks", json=body)
    assert resp.status == 202
    admission = await resp.json()
    check(DATA, "AdmissionResponse", admission)
    stream = await api.client.get(f"/v1/tasks/{admission['task_id']}/stream")
    frames = parse_frames(await stream.read())
    assert {"started", "token", "end"} <= {event for event, _ in frames}
    for event, data in frames:
        check(DATA, SSE_SCHEMAS[event], _without_nulls(json.loads(data)))  # NULL_MEANS_UNSET
    session = await (await api.client.get("/v1/sessions/s1")).json()
    check(DATA, "SessionInfo", session)
    assert "cost_budget_remaining" not in session  # unset budgets are absent


async def test_stream_error_event_validates(make_api: MakeApi) -> None:
    api = await _llama(make_api, fail_after_tokens=1)
    task_id = await api.submit(engine="llamacpp")
    frames = parse_frames(await (await api.client.get(f"/v1/tasks/{task_id}/stream")).read())
    event, data = frames[-1]
    assert event == "error"
    check(DATA, "SSEError", json.loads(data))


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"prompt": "x", "engine": "llamacpp", "max_tokens": 0}, 400),
        ({"prompt": "x", "engine": "vllm"}, 503),
    ],
)
async def test_error_envelopes_validate(
    make_api: MakeApi, body: dict[str, Any], status: int
) -> None:
    api = await _llama(make_api)
    resp = await api.client.post("/v1/tasks", json=body)
    assert resp.status == status
    check(DATA, "ErrorEnvelope", await resp.json())


async def test_backpressure_envelope_validates(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("llama0", tokens_per_s=1, engine="llamacpp"), queue_capacity=1)
    await api.submit()
    await api.submit()
    statuses = []
    for _ in range(2):
        resp = await api.client.post("/v1/tasks", json={"prompt": "x"})
        statuses.append(resp.status)
    assert statuses[-1] == 429
    check(DATA, "BackpressureErrorEnvelope", await resp.json())


async def test_control_plane_answers_validate(make_api: MakeApi) -> None:
    api = await _llama(make_api)
    check(CONTROL, "Capabilities", await (await api.client.get("/v1/capabilities")).json())
    check(CONTROL, "PoolHealth", await (await api.client.get("/v1/pools/llama0/health")).json())
    reload = {"new_model_ref": "other-model"}
    check(CONTROL, "ReloadRequest", reload)
    assert (await api.client.post("/v1/pools/llama0/reload", json=reload)).status == 200
    drain = {"deadline_ms": 10}
    check(CONTROL, "DrainRequest", drain)
    assert (await api.client.post("/v1/pools/llama0/drain", json=drain)).status == 202


def test_the_checker_rejects_a_wrong_shape() -> None:
    with pytest.raises(AssertionError, match="queue_position"):
        check(DATA, "AdmissionResponse", {"task_id": "x", "predicted_start_ms": 1, "backoff_ms": 0})
