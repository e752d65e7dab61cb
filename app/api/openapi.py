"""The OpenAPI 3.1 document of the OrchQueue v1 API, generated from the pydantic contracts.

Schemas come from ``model_json_schema`` (request models in validation mode,
responses in serialization mode); ``OPERATIONS`` lists every served route and
the test suite checks it against the router. ``x-examples`` come from model
instances, so they are valid by construction.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from app.api import examples as ex
from app.api.openai.wire import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ModelCard,
    ModelList,
    OpenAIErrorBody,
)
from app.api.wire import AuthErrorBody, DrainAccepted, PoolHealth, PoolLog
from app.orchestrator.contracts import (
    API_VERSION,
    AdmissionResponse,
    Capabilities,
    DecisionRecord,
    DrainRequest,
    EndPayload,
    ErrorEnvelope,
    ErrorPayload,
    MetricsPayload,
    PoolView,
    ReloadRequest,
    ReloadResult,
    SessionInfo,
    StartedPayload,
    TaskRequest,
    TaskView,
    TokenPayload,
)

REF = "#/components/schemas/{model}"
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    TaskRequest, DrainRequest, ReloadRequest, ChatCompletionRequest, CompletionRequest,
)  # fmt: skip
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    AdmissionResponse, TaskView, SessionInfo, Capabilities, PoolView, PoolHealth,
    DrainAccepted, PoolLog, ReloadResult, DecisionRecord, ErrorEnvelope, AuthErrorBody,
    StartedPayload, TokenPayload, MetricsPayload, EndPayload, ErrorPayload,
    ModelList, ModelCard, ChatCompletion, ChatCompletionChunk, Completion, OpenAIErrorBody,
)  # fmt: skip
SSE_EVENTS: dict[str, type[BaseModel]] = {
    "started": StartedPayload,
    "token": TokenPayload,
    "metrics": MetricsPayload,
    "end": EndPayload,
    "error": ErrorPayload,
}
ERROR_TEXT = {
    400: "Invalid JSON or parameters (INVALID_PARAMS), a guardrail refusal (ADMISSION_REJECT) "
    "or a deadline_ms the pool cannot meet (DEADLINE_UNMET)",
    401: "Missing or wrong bearer token",
    403: "Host or Origin refused (DNS rebinding / cross-origin protection)",
    404: "Unknown id (NOT_FOUND; model_not_found on the OpenAI routes)",
    409: "Conflict (duplicate task_id, a second stream reader, or RELOAD_FAILED: the "
    "engine could not load the new model and the old one keeps serving)",
    413: "Request body over the size limit",
    429: "Queue full (ADMISSION_REJECT, or QUEUE_FULL_DROP_LRU under drop-lru, with "
    "policy_label); retry after Retry-After seconds",
    500: "Unexpected server error (INTERNAL)",
    503: "No pool can take the task now (POOL_UNAVAILABLE or POOL_UNREADY) or shutting down",
}
ALWAYS = (401, 403, 500)
Schema = dict[str, Any]


def ref(model: type[BaseModel]) -> Schema:
    """Return the ``$ref`` to ``model``'s component schema."""
    return {"$ref": REF.format(model=model.__name__)}


def component_schemas() -> dict[str, Schema]:
    """Return every component schema, generated from the pydantic models."""
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "validation") for m in REQUEST_MODELS
    ]
    pairs += [(m, "serialization") for m in RESPONSE_MODELS]
    _, top = models_json_schema(pairs, ref_template=REF)
    schemas: dict[str, Schema] = dict(top.get("$defs", {}))
    schemas["SseFrame"] = {
        "description": "One Server-Sent Events frame: `event: <event>` then `data: <json>`.",
        "oneOf": [
            {
                "type": "object",
                "properties": {"event": {"const": name}, "data": ref(model)},
                "required": ["event", "data"],
            }
            for name, model in SSE_EVENTS.items()
        ],
    }
    return schemas


def _header(description: str, schema: Schema, required: bool = True) -> Schema:
    return {"description": description, "required": required, "schema": schema}


BUDGET_HEADERS = (
    "X-Budget-Tokens-Remaining",
    "X-Budget-Time-Remaining-Ms",
    "X-Budget-Cost-Remaining",
)
ADMITTED_HEADERS = ("Location", *BUDGET_HEADERS)
HEADERS: dict[str, Schema] = {
    "X-Correlation-Id": _header(
        "Echo of the request's X-Correlation-Id, else a new UUIDv4",
        {"type": "string", "maxLength": 128},
    ),
    "Retry-After": _header("Seconds to wait before retrying (>= 1)", {"type": "integer"}),
    "Retry-After-Optional": _header(
        "Seconds to wait before retrying (>= 1), when known", {"type": "integer"}, False
    ),
    "X-Backoff-Ms": _header("Suggested back-off in milliseconds", {"type": "integer"}),
    "X-Budget-Tokens-Remaining": _header(
        "Tokens left in the session budget", {"type": "integer"}, False
    ),
    "X-Budget-Time-Remaining-Ms": _header(
        "Milliseconds left in the session time budget", {"type": "integer"}, False
    ),
    "X-Budget-Cost-Remaining": _header(
        "Cost units left in the session cost budget", {"type": "number"}, False
    ),
    "Location": _header("Where to stream the task's events", {"type": "string"}),
    "X-Orch-Pool-Id": _header("The pool the task was placed on", {"type": "string"}),
    "X-Orch-Task-Id": _header(
        "The OrchQueue task id (GET /v1/tasks/{task_id}, POST .../cancel)", {"type": "string"}
    ),
}


def _headers(*names: str) -> Schema:
    out = {"X-Correlation-Id": {"$ref": "#/components/headers/X-Correlation-Id"}}
    for name in names:
        public = name.removesuffix("-Optional")
        out[public] = {"$ref": f"#/components/headers/{name}"}
    return out


def json_response(description: str, schema: Schema, *headers: str) -> Schema:
    """Return a response object with a JSON body of ``schema``."""
    return {
        "description": description,
        "headers": _headers(*headers),
        "content": {"application/json": {"schema": schema}},
    }


def empty_response(description: str) -> Schema:
    """Return a response object without a body."""
    return {"description": description, "headers": _headers()}


def error_responses(*statuses: int, model: type[BaseModel] | None = None) -> dict[str, Schema]:
    """Return the error responses ``statuses`` plus 401, 403 and 500.

    Bodies are the OrchQueue envelopes, or ``model`` for every status when given.
    """
    out: dict[str, Schema] = {}
    for status in sorted({*statuses, *ALWAYS}):
        body_model = model or (AuthErrorBody if status == 401 else ErrorEnvelope)
        extra: tuple[str, ...] = ("Retry-After", "X-Backoff-Ms") if status == 429 else ()
        if status == 503:
            extra = ("Retry-After-Optional",)
        out[str(status)] = json_response(ERROR_TEXT[status], ref(body_model), *extra)
    return out


def path_param(name: str, description: str) -> Schema:
    """Return a required string path parameter."""
    schema = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._-]+$"}
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def limit_param(default: int) -> Schema:
    """Return the optional ``limit`` query parameter (1..500)."""
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"How many entries to return (1..500, default {default})",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": default},
    }


def body(model: type[BaseModel], required: bool = True) -> Schema:
    """Return a JSON request body of ``model``."""
    return {"required": required, "content": {"application/json": {"schema": ref(model)}}}


TAIL_PARAM: Schema = {
    "name": "tail",
    "in": "query",
    "required": False,
    "description": "How many of the last lines to return (1..5000, default 200)",
    "schema": {"type": "integer", "minimum": 1, "maximum": 5000, "default": 200},
}
TASK_ID = path_param("task_id", "The task id returned by POST /v1/tasks")
SESSION_ID = path_param("session_id", "The session id given in task requests")
POOL_ID = path_param("pool_id", "A pool id from GET /v1/pools")


def _stream_response(*headers: str) -> Schema:
    events = {name: ref(model) for name, model in SSE_EVENTS.items()}
    return {
        "description": (
            "Server-Sent Events, flushed per event: `started`, `token`* (with `metrics` "
            "at a bounded cadence after the first token), then `end`; or one `error` "
            "as the terminal event. `: keep-alive` comment lines when heartbeats are on."
        ),
        "headers": _headers(*BUDGET_HEADERS, *headers),
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "x-sse-events": events,
                "x-sse-frame": {"$ref": REF.format(model="SseFrame")},
            }
        },
    }


def _op(
    op_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Schema],
    *,
    params: tuple[Schema, ...] = (),
    request: Schema | None = None,
    examples: Schema | None = None,
) -> Schema:
    op: Schema = {"operationId": op_id, "summary": summary, "tags": [tag]}
    if params:
        op["parameters"] = list(params)
    if request is not None:
        op["requestBody"] = request
    op["responses"] = responses
    if examples is not None:
        op["x-examples"] = examples
    return op


def operations() -> dict[str, dict[str, Schema]]:
    """Return ``{path: {method: operation}}`` for every served route."""
    return {
        "/v1/tasks": {
            "post": _op(
                "enqueueTask",
                "Admit a task into a pool's queue; with `Accept: text/event-stream`, "
                "answer with its SSE stream at once (one request instead of two)",
                "data-plane",
                {"202": json_response("Admitted", ref(AdmissionResponse), *ADMITTED_HEADERS),
                 "200": _stream_response("Location", "X-Orch-Task-Id"),
                 **error_responses(400, 409, 413, 429, 503)},
                request=body(TaskRequest), examples=ex.enqueue(),
            ),
            "get": _op(
                "listTasks", "Live tasks, then the most recent finished ones", "data-plane",
                {"200": json_response("Tasks", _array(TaskView)), **error_responses(400)},
                params=(limit_param(200),),
            ),
        },
        "/v1/tasks/{task_id}": {
            "get": _op(
                "getTask", "State, pool, timings, tokens, decision summary and the id of the "
                "trace artifact of its stream (once the stream ended)", "data-plane",
                {"200": json_response("The task", ref(TaskView)), **error_responses(404)},
                params=(TASK_ID,), examples=ex.task_view(),
            ),
        },
        "/v1/tasks/{task_id}/stream": {
            "get": _op(
                "streamTask", "Stream the task's events (SSE)", "data-plane",
                {"200": _stream_response(), **error_responses(404, 409)},
                params=(TASK_ID,), examples=ex.stream(),
            ),
        },
        "/v1/tasks/{task_id}/cancel": {
            "post": _op(
                "cancelTask", "Cancel a task (idempotent)", "data-plane",
                {"204": empty_response("Canceled (or already finished)"),
                 **error_responses(404)},
                params=(TASK_ID,), examples=ex.cancel(),
            ),
        },
        "/v1/sessions/{session_id}": {
            "get": _op(
                "getSession", "A session's TTL, turns, KV warmth and budgets", "data-plane",
                {"200": json_response("The session", ref(SessionInfo)),
                 **error_responses(404)},
                params=(SESSION_ID,), examples=ex.session(),
            ),
            "delete": _op(
                "deleteSession", "Forget a session", "data-plane",
                {"204": empty_response("Deleted"), **error_responses(404)},
                params=(SESSION_ID,), examples=ex.session_delete(),
            ),
        },
        **_control_plane(),
        **_observability(),
        **_openai(),
    }  # fmt: skip


def _control_plane() -> dict[str, dict[str, Schema]]:
    return {
        "/v1/capabilities": {
            "get": _op(
                "getCapabilities", "Engines, rate limits and feature flags", "control-plane",
                {"200": json_response("Capabilities", ref(Capabilities)), **error_responses()},
                examples=ex.capabilities(),
            ),
        },
        "/v1/pools": {
            "get": _op(
                "listPools", "Every pool with its state, queue and GPU figures", "control-plane",
                {"200": json_response("Pools", _array(PoolView)), **error_responses()},
            ),
        },
        "/v1/pools/{pool_id}/health": {
            "get": _op(
                "getPoolHealth", "Liveness, readiness, queue depth, slots, VRAM", "control-plane",
                {"200": json_response("Health", ref(PoolHealth)), **error_responses(404)},
                params=(POOL_ID,),
            ),
        },
        "/v1/pools/{pool_id}/log": {
            "get": _op(
                "getPoolLog", "The last lines of the pool's engine log", "control-plane",
                {"200": json_response("Log lines, oldest first", ref(PoolLog)),
                 **error_responses(400, 404)},
                params=(POOL_ID, TAIL_PARAM),
            ),
        },
        "/v1/pools/{pool_id}/drain": {
            "post": _op(
                "drainPool", "Stop admissions; cancel leftovers at the deadline", "control-plane",
                {"202": json_response("Draining", ref(DrainAccepted)),
                 **error_responses(400, 404, 413)},
                params=(POOL_ID,), request=body(DrainRequest, required=False),
                examples=ex.drain(),
            ),
        },
        "/v1/pools/{pool_id}/resume": {
            "post": _op(
                "resumePool", "Admit to a drained pool again", "control-plane",
                {"200": json_response("Health", ref(PoolHealth)), **error_responses(404)},
                params=(POOL_ID,),
            ),
        },
        "/v1/pools/{pool_id}/reload": {
            "post": _op(
                "reloadPool", "Swap the model atomically (rolls back on failure)",
                "control-plane",
                {"200": json_response("Now serving the new model", ref(ReloadResult)),
                 **error_responses(400, 404, 409, 413)},
                params=(POOL_ID,), request=body(ReloadRequest), examples=ex.reload(),
            ),
        },
        "/v1/placement/decisions": {
            "get": _op(
                "listDecisions",
                "Recent placement decisions, newest first: each says admitted or refused "
                "(a 429 included) and gives every candidate its outcome and its filter or rank key",
                "control-plane",
                {"200": json_response("Decisions, newest first", _array(DecisionRecord)),
                 **error_responses(400)},
                params=(limit_param(50),),
            ),
        },
    }  # fmt: skip


def _observability() -> dict[str, dict[str, Schema]]:
    metrics = {
        "description": "Prometheus text exposition (core collectors and process metrics)",
        "headers": _headers(),
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    return {
        "/metrics": {
            "get": _op(
                "getMetrics", "Prometheus metrics", "observability",
                {"200": metrics, **error_responses()},
            ),
        },
        "/openapi.json": {
            "get": _op(
                "getOpenApi", "This document", "observability",
                {"200": json_response("OpenAPI 3.1 document", {"type": "object"}),
                 **error_responses()},
            ),
        },
    }  # fmt: skip


def _completion_response(whole: type[BaseModel], chunk: type[BaseModel]) -> Schema:
    return {
        "description": (
            "`stream` false: the whole answer with `usage`. `stream` true: Server-Sent "
            "Events `data: <chunk>` (first chat chunk has `delta.role`; the last has "
            "`finish_reason`; with `stream_options.include_usage` one more with `usage` "
            "and no choices), then `data: [DONE]`. A failure mid-stream sends "
            '`data: {"error": {...}}` then `data: [DONE]`.'
        ),
        "headers": _headers("X-Orch-Pool-Id", "X-Orch-Task-Id"),
        "content": {
            "application/json": {"schema": ref(whole)},
            "text/event-stream": {"schema": {"type": "string"}, "x-sse-chunk": ref(chunk)},
        },
    }


def _openai() -> dict[str, dict[str, Schema]]:
    def errors(*statuses: int) -> dict[str, Schema]:
        return error_responses(*statuses, model=OpenAIErrorBody)

    model_id = path_param("model_id", "A model id from GET /v1/models")
    return {
        "/v1/models": {
            "get": _op(
                "listModels", "The models the pools serve, with their pools", "openai",
                {"200": json_response("Models", ref(ModelList)), **errors()},
                examples=ex.models(),
            ),
        },
        "/v1/models/{model_id}": {
            "get": _op(
                "getModel", "One model and its pools", "openai",
                {"200": json_response("The model", ref(ModelCard)), **errors(404)},
                params=(model_id,),
            ),
        },
        "/v1/chat/completions": {
            "post": _op(
                "createChatCompletion", "OpenAI-compatible chat completion", "openai",
                {"200": _completion_response(ChatCompletion, ChatCompletionChunk),
                 **errors(400, 404, 413, 429, 503)},
                request=body(ChatCompletionRequest), examples=ex.chat_completion(),
            ),
        },
        "/v1/completions": {
            "post": _op(
                "createCompletion", "OpenAI-compatible text completion", "openai",
                {"200": _completion_response(Completion, Completion),
                 **errors(400, 404, 413, 429, 503)},
                request=body(CompletionRequest), examples=ex.completion(),
            ),
        },
    }  # fmt: skip


def _array(model: type[BaseModel]) -> Schema:
    return {"type": "array", "items": ref(model)}


def build_openapi(*, catalog: bool = False, artifacts: bool = False) -> Schema:
    """Return the OpenAPI 3.1 document (a fresh dict), with the catalog routes when
    ``catalog`` and the artifact routes when ``artifacts``. Never blocks."""
    from app.api.artifacts import artifact_operations, artifact_schemas
    from app.api.catalog_doc import catalog_operations, catalog_schemas

    paths = operations() | (catalog_operations() if catalog else {})
    schemas = component_schemas() | (catalog_schemas() if catalog else {})
    if artifacts:
        paths |= artifact_operations()
        schemas |= artifact_schemas()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "llama-orch OrchQueue v1",
            "version": API_VERSION,
            "description": (
                "Data plane, control plane and SSE streaming of llama-orch desktop, plus "
                "OpenAI-compatible /v1/models, /v1/chat/completions and /v1/completions "
                "(errors in OpenAI's shape there). With a token configured every route "
                "needs `Authorization: Bearer <token>`."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "headers": HEADERS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "x-sse-events": {name: ref(model) for name, model in SSE_EVENTS.items()},
    }
