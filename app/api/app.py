"""The aiohttp application: routes and thin handlers (parse -> facade -> render).

Errors raised by handlers (the facade's OrchError, pydantic's ValidationError,
ApiError) are turned into responses by the one mapper in ``errors.py``, called
from the ``request_context`` middleware.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, get_args

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from pydantic import BaseModel, ValidationError

from app.api.artifacts import artifact_routes
from app.api.auth import bearer_auth, browser_guard
from app.api.catalog import catalog_routes
from app.api.errors import ApiError, describe_validation
from app.api.middleware import CORRELATION_HEADER, request_context, stamp_headers
from app.api.openai.errors import openai_errors
from app.api.openai.routes import add_openai_routes
from app.api.openapi import build_openapi
from app.api.render import JSON_TYPE, dumps, model_response
from app.api.settings import ApiSettings
from app.api.sse import LiveStreams, StreamOptions, serve_stream
from app.api.state import (
    ARTIFACTS,
    CORRELATION_ID,
    IDENTITY,
    MODELS,
    OPENAPI_JSON,
    ORCH,
    SETTINGS,
    STREAMS,
    SettingsBox,
)
from app.api.task_artifacts import TranscriptArchive
from app.api.wire import DrainAccepted, PoolHealth, PoolLog
from app.orchestrator.artifacts_port import ArtifactRegistry
from app.orchestrator.catalog_port import ModelCatalog
from app.orchestrator.contracts import (
    DrainRequest,
    EngineName,
    ErrorCode,
    ReloadRequest,
    TaskRequest,
)
from app.orchestrator.errors import InvalidParams, NotFound, OrchError
from app.orchestrator.service import Orchestrator, StreamHandle

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_LIMIT = 500
MAX_LOG_LINES = 5000

_PROCESS_REGISTRY = CollectorRegistry()
ProcessCollector(registry=_PROCESS_REGISTRY)


# ---- request parsing ---------------------------------------------------------------


async def read_json(request: web.Request) -> Any:
    """Return the parsed JSON body, None when the body is empty. Awaits the body.

    Raises ApiError 413 over ``max_body_bytes`` and InvalidParams for bad JSON,
    including JSON nested too deep to parse.
    """
    limit = request.app[SETTINGS].current.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    raw = bytearray()
    async for chunk in request.content.iter_any():
        raw += chunk
        if len(raw) > limit:
            raise _too_large(limit)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidParams(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except UnicodeDecodeError:
        raise InvalidParams("request body is not UTF-8 encoded JSON") from None
    except RecursionError:
        raise InvalidParams(
            "request body has JSON nested deeper than the server accepts (hundreds of "
            "levels); send a flatter body"
        ) from None


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "INVALID_PARAMS", f"request body is over {limit} bytes; send a smaller body"
    )


async def parse_body(request: web.Request, model: type[M], *, optional: bool = False) -> M:
    """Return the body validated as ``model``; awaits the body.

    Raises InvalidParams (empty or bad JSON), ValidationError (schema) or ApiError 413.
    """
    data = await read_json(request)
    if data is None:
        if not optional:
            raise InvalidParams(
                f"request body is empty; send a JSON {model.__name__} (see GET /openapi.json)"
            )
        data = {}
    return model.model_validate(data)


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """Return the integer query parameter ``name`` (default when absent).

    Raises InvalidParams when it is not an integer within [low, high].
    """
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidParams(f"query parameter '{name}' must be an integer from {low} to {high}")
    return value


def _orch(request: web.Request) -> Orchestrator:
    return request.app[ORCH]


# ---- data plane ------------------------------------------------------------------


async def submit_task(request: web.Request) -> web.StreamResponse:
    """POST /v1/tasks -> 202 AdmissionResponse (X-Budget-* headers in a session with
    budgets); with ``Accept: text/event-stream``, the one-request form: 200 and the task's
    SSE stream at once (``X-Orch-Task-Id`` names it). A refusal names the engine the
    request named (schema errors included)."""
    data = await read_json(request)
    if data is None:
        raise InvalidParams(
            "request body is empty; send a JSON TaskRequest (see GET /openapi.json)"
        )
    try:
        task = TaskRequest.model_validate(data)
    except ValidationError as exc:
        raise _invalid_naming_engine(exc, data) from None
    orch = _orch(request)
    admission = orch.submit(
        task, identity=request[IDENTITY], correlation_id=request[CORRELATION_ID]
    )
    location = f"/v1/tasks/{admission.task_id}/stream"
    if "text/event-stream" in request.headers.get("Accept", ""):
        handle = orch.open_stream(str(admission.task_id))
        extra = {"Location": location, "X-Orch-Task-Id": str(admission.task_id)}
        return await _serve(request, handle, extra)
    headers = {"Location": location} | budget_headers(orch, admission.session_id)
    return model_response(admission, status=202, headers=headers)


def _invalid_naming_engine(exc: ValidationError, data: Any) -> OrchError:
    """Return the 400 INVALID_PARAMS for a schema error, naming a valid requested engine."""
    engine = data.get("engine") if isinstance(data, dict) else None
    return OrchError(
        ErrorCode.INVALID_PARAMS,
        describe_validation(exc),
        status=400,
        engine=engine if engine in get_args(EngineName) else None,
        retriable=False,
    )


async def list_tasks(request: web.Request) -> web.Response:
    """GET /v1/tasks -> live tasks, then recent finished ones."""
    limit = int_query(request, "limit", 200, 1, MAX_LIMIT)
    return model_response(_orch(request).tasks(limit))


async def get_task(request: web.Request) -> web.Response:
    """GET /v1/tasks/{task_id} -> TaskView."""
    return model_response(_orch(request).task(request.match_info["task_id"]))


async def stream_task(request: web.Request) -> web.StreamResponse:
    """GET /v1/tasks/{task_id}/stream -> SSE until the terminal event."""
    handle = _orch(request).open_stream(request.match_info["task_id"])
    if CORRELATION_HEADER not in request.headers:
        request[CORRELATION_ID] = handle.correlation_id
    return await _serve(request, handle, {})


async def _serve(
    request: web.Request, handle: StreamHandle, extra: dict[str, str]
) -> web.StreamResponse:
    orch = _orch(request)
    settings = request.app[SETTINGS].current
    options = StreamOptions(
        heartbeat_ms=settings.sse_heartbeat_ms,
        microbatch_ms=settings.sse_microbatch_ms,
        cancel_on_disconnect=settings.cancel_on_disconnect,
    )
    headers = {**budget_headers(orch, handle.session_id), **extra}
    return await serve_stream(request, handle, request.app[STREAMS], options, headers)


def budget_headers(orch: Orchestrator, session_id: str | None) -> dict[str, str]:
    """Return the X-Budget-* headers of a session that has budgets (else none)."""
    if session_id is None:
        return {}
    try:
        budgets = orch.session(session_id).budgets
    except NotFound:
        return {}
    headers = {}
    if budgets.tokens_remaining is not None:
        headers["X-Budget-Tokens-Remaining"] = str(budgets.tokens_remaining)
    if budgets.time_remaining_ms is not None:
        headers["X-Budget-Time-Remaining-Ms"] = str(budgets.time_remaining_ms)
    if budgets.cost_remaining is not None:
        headers["X-Budget-Cost-Remaining"] = f"{budgets.cost_remaining:g}"
    return headers


async def cancel_task(request: web.Request) -> web.Response:
    """POST /v1/tasks/{task_id}/cancel -> 204 (idempotent)."""
    _orch(request).cancel(request.match_info["task_id"])
    return web.Response(status=204)


async def get_session(request: web.Request) -> web.Response:
    """GET /v1/sessions/{session_id} -> SessionInfo."""
    return model_response(_orch(request).session(request.match_info["session_id"]))


async def delete_session(request: web.Request) -> web.Response:
    """DELETE /v1/sessions/{session_id} -> 204."""
    _orch(request).delete_session(request.match_info["session_id"])
    return web.Response(status=204)


# ---- control plane -----------------------------------------------------------------


def feature_flags(settings: ApiSettings) -> dict[str, bool]:
    """Return the API's feature flags for GET /v1/capabilities."""
    return {
        "cancel_on_disconnect": settings.cancel_on_disconnect,
        "heartbeat": settings.sse_heartbeat_ms > 0,
        "micro_batch": settings.sse_microbatch_ms > 0,
        "auth_required": settings.token_required,
    }


async def capabilities(request: web.Request) -> web.Response:
    """GET /v1/capabilities."""
    flags = feature_flags(request.app[SETTINGS].current)
    return model_response(_orch(request).capabilities(flags))


async def list_pools(request: web.Request) -> web.Response:
    """GET /v1/pools."""
    return model_response(_orch(request).pool_views())


async def pool_health(request: web.Request) -> web.Response:
    """GET /v1/pools/{pool_id}/health."""
    view = _orch(request).pool_view(request.match_info["pool_id"])
    return model_response(PoolHealth.of(view))


async def pool_log(request: web.Request) -> web.Response:
    """GET /v1/pools/{pool_id}/log?tail=N (1..5000 lines, default 200)."""
    pool_id = request.match_info["pool_id"]
    tail = int_query(request, "tail", 200, 1, MAX_LOG_LINES)
    log_file, lines = await _orch(request).pool_log(pool_id, tail)
    return model_response(PoolLog(pool_id=pool_id, log_file=log_file, lines=lines))


async def drain_pool(request: web.Request) -> web.Response:
    """POST /v1/pools/{pool_id}/drain {deadline_ms} -> 202."""
    pool_id = request.match_info["pool_id"]
    drain = await parse_body(request, DrainRequest, optional=True)
    _orch(request).drain(pool_id, drain.deadline_ms)
    accepted = DrainAccepted(pool_id=pool_id, draining=True, deadline_ms=drain.deadline_ms)
    return model_response(accepted, status=202)


async def resume_pool(request: web.Request) -> web.Response:
    """POST /v1/pools/{pool_id}/resume -> 200 PoolHealth."""
    pool_id = request.match_info["pool_id"]
    _orch(request).resume(pool_id)
    return model_response(PoolHealth.of(_orch(request).pool_view(pool_id)))


async def reload_pool(request: web.Request) -> web.Response:
    """POST /v1/pools/{pool_id}/reload {model_ref | new_model_ref, persist} -> 200 ReloadResult;
    409 RELOAD_FAILED with the reason when the engine could not load it (the old model
    keeps serving).

    With a catalog, a catalog ref (``hf:...``), id or path is resolved to its file
    first; ``persist`` writes the chosen ref to the config once the reload worked.
    """
    reload = await parse_body(request, ReloadRequest)
    pool_id = request.match_info["pool_id"]
    models = request.app.get(MODELS)
    _orch(request).pool_view(pool_id)  # NotFound before any catalog work
    if models is None and reload.persist:
        raise InvalidParams("persist needs the model catalog, which this server does not run")
    target = reload.model_ref if models is None else await models.resolve(reload.model_ref)
    result = await _orch(request).reload(pool_id, target)
    if not result.ok:
        raise OrchError("RELOAD_FAILED", result.message, status=409, pool_id=pool_id)
    if reload.persist and models is not None:
        await models.remember_pool_model(pool_id, reload.model_ref)
    return model_response(result)


async def placement_decisions(request: web.Request) -> web.Response:
    """GET /v1/placement/decisions?limit=N (1..500, default 50)."""
    limit = int_query(request, "limit", 50, 1, MAX_LIMIT)
    return model_response(_orch(request).recent_decisions(limit))


# ---- observability -----------------------------------------------------------------


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text of the core's collectors plus process metrics."""
    body = generate_latest(_orch(request).metrics.registry) + generate_latest(_PROCESS_REGISTRY)
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json."""
    return web.Response(text=request.app[OPENAPI_JSON], content_type=JSON_TYPE)


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/v1/tasks", submit_task),
    ("GET", "/v1/tasks", list_tasks),
    ("GET", "/v1/tasks/{task_id}", get_task),
    ("GET", "/v1/tasks/{task_id}/stream", stream_task),
    ("POST", "/v1/tasks/{task_id}/cancel", cancel_task),
    ("GET", "/v1/sessions/{session_id}", get_session),
    ("DELETE", "/v1/sessions/{session_id}", delete_session),
    ("GET", "/v1/capabilities", capabilities),
    ("GET", "/v1/pools", list_pools),
    ("GET", "/v1/pools/{pool_id}/health", pool_health),
    ("GET", "/v1/pools/{pool_id}/log", pool_log),
    ("POST", "/v1/pools/{pool_id}/drain", drain_pool),
    ("POST", "/v1/pools/{pool_id}/resume", resume_pool),
    ("POST", "/v1/pools/{pool_id}/reload", reload_pool),
    ("GET", "/v1/placement/decisions", placement_decisions),
    ("GET", "/metrics", metrics),
    ("GET", "/openapi.json", openapi),
)


# ---- the factory -------------------------------------------------------------------


async def _close_streams(app: web.Application) -> None:
    streams = app[STREAMS]
    await streams.close_all()
    if streams.archive is not None:
        await streams.archive.flush()


def make_app(
    orch: Orchestrator,
    settings: ApiSettings,
    *,
    models: ModelCatalog | None = None,
    artifacts: ArtifactRegistry | None = None,
) -> web.Application:
    """Return the application serving ``orch`` with ``settings``. Never blocks.

    Live streams are closed with an ``error`` frame once, at shutdown (on_shutdown
    runs after the listeners stopped, while connections are still open).
    The OpenAI-compatible routes (``app.api.openai``) answer errors in OpenAI's shape.
    """
    app = web.Application(
        middlewares=[request_context, openai_errors, browser_guard, bearer_auth],
        client_max_size=max(1, settings.max_body_bytes),
    )
    app[ORCH] = orch
    app[SETTINGS] = SettingsBox(settings)
    app[STREAMS] = LiveStreams(orch.cancel)
    app[OPENAPI_JSON] = dumps(
        build_openapi(catalog=models is not None, artifacts=artifacts is not None)
    )
    app.on_response_prepare.append(stamp_headers)
    app.on_shutdown.append(_close_streams)
    routes = ROUTES
    if models is not None:
        app[MODELS] = models
        routes += catalog_routes(parse_body)
    if artifacts is not None:
        app[ARTIFACTS] = artifacts
        app[STREAMS].archive = TranscriptArchive(orch, artifacts)
        routes += artifact_routes(parse_body)
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    add_openai_routes(app, read_json)
    return app
