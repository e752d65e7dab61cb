"""The OpenAPI document: valid 3.1, covers every route, SSE events, errors and examples."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from app.api.openapi import SSE_EVENTS, build_openapi
from app.orchestrator.contracts import API_VERSION, AdmissionResponse, Capabilities, TaskRequest
from tests.api.conftest import MakeApi


async def test_served_document_validates_and_covers_the_router(make_api: MakeApi) -> None:
    api = await make_api()
    resp = await api.client.get("/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    doc = await resp.json()
    validate(doc)
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"] == API_VERSION
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    routed = {(m, p) for m, p in _routes_with_templates(api.app)}
    assert documented == routed


def _routes_with_templates(app: Any) -> list[tuple[str, str]]:
    return [(r.method, r.resource.canonical) for r in app.router.routes()]


def test_every_operation_documents_auth_and_errors() -> None:
    doc = build_openapi()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"401", "403", "500"} <= codes, (method, path)
            assert any(c.startswith("2") for c in codes)
            for code, response in op["responses"].items():
                assert "X-Correlation-Id" in response["headers"], (method, path, code)
    enqueue = doc["paths"]["/v1/tasks"]["post"]["responses"]
    assert {"400", "409", "413", "429", "503"} <= set(enqueue)
    assert {"Retry-After", "X-Backoff-Ms"} <= set(enqueue["429"]["headers"])
    assert enqueue["401"]["content"]["application/json"]["schema"]["$ref"].endswith("AuthErrorBody")


def test_sse_events_and_schemas_are_documented() -> None:
    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    media = doc["paths"]["/v1/tasks/{task_id}/stream"]["get"]["responses"]["200"]["content"]
    events = media["text/event-stream"]["x-sse-events"]
    assert set(events) == set(SSE_EVENTS) == {"started", "token", "metrics", "end", "error"}
    for ref in events.values():
        assert ref["$ref"].rsplit("/", 1)[1] in schemas
    assert "decode_ms" in schemas["EndPayload"]["properties"]
    assert "decode_time_ms" in schemas["EndPayload"]["required"]
    assert schemas["TaskRequest"]["additionalProperties"] is False


def test_examples_cover_the_contract_and_validate() -> None:
    paths = build_openapi()["paths"]

    def examples(path: str, method: str) -> dict[str, Any]:
        return dict(paths[path][method]["x-examples"])

    enqueue = examples("/v1/tasks", "post")
    TaskRequest.model_validate(enqueue["request"])
    AdmissionResponse.model_validate(enqueue["response"]["body"])
    Capabilities.model_validate(examples("/v1/capabilities", "get")["response"]["body"])
    frames = examples("/v1/tasks/{task_id}/stream", "get")["frames"]
    assert frames.startswith("event: started\ndata: {") and frames.endswith("\n\n")
    assert examples("/v1/tasks/{task_id}/cancel", "post")["response"]["status"] == 204
    for path, method in [
        ("/v1/sessions/{session_id}", "get"),
        ("/v1/sessions/{session_id}", "delete"),
        ("/v1/pools/{pool_id}/drain", "post"),
        ("/v1/pools/{pool_id}/reload", "post"),
    ]:
        assert examples(path, method), (path, method)
