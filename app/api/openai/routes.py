"""The OpenAI-compatible endpoints: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

They serve through the same pipeline as OrchQueue tasks (admission, placement,
queues, metrics, decisions log, cancel-on-disconnect, auth and browser guards):
a request becomes a TaskRequest submitted with ``api="openai"``, and its events
are rendered as OpenAI chunks or one JSON body. ``model`` names a model id from
``GET /v1/models`` or a pool id; an unknown one is a 404 ``model_not_found``.
Answers carry ``X-Correlation-Id``, ``X-Orch-Pool-Id`` and ``X-Orch-Task-Id``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from app.api.openai.errors import model_not_found
from app.api.openai.stream import ChunkRenderer, OpenAIFrames, collect, usage
from app.api.openai.wire import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIRequest,
    supported_fields,
    to_task_request,
)
from app.api.render import dict_response
from app.api.sse import StreamOptions, serve_stream
from app.api.state import CORRELATION_ID, IDENTITY, ORCH, SETTINGS, STREAMS
from app.orchestrator.contracts import ENGINE_FEATURES, PoolView
from app.orchestrator.errors import InvalidParams
from app.orchestrator.placement import serves_model_ref
from app.orchestrator.service import StreamHandle

POOL_HEADER = "X-Orch-Pool-Id"
TASK_HEADER = "X-Orch-Task-Id"
OWNER = "llama-orch"
CLIENT_GONE_STATUS = 499  # logged only: the client closed the connection before the answer
MODELS_CREATED = web.AppKey("openai_models_created", int)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ReadJson = Callable[[web.Request], Awaitable[Any]]
READ_JSON: web.AppKey[ReadJson] = web.AppKey("openai_read_json")


# ---- models ------------------------------------------------------------------------


def model_cards(views: Iterable[PoolView], created: int) -> list[dict[str, Any]]:
    """Return one model card per model id the pools serve. Pure.

    Beside OpenAI's fields each card lists its ``pools``, the largest
    ``context_length`` among them, and ``capabilities``: for each engine feature
    (json_schema, tools, logprobs) whether some pool serving the model can do it.
    """
    by_model: dict[str, list[PoolView]] = {}
    for view in views:
        if view.model:
            by_model.setdefault(view.model, []).append(view)
    return [_card(model, pools, created) for model, pools in sorted(by_model.items())]


def _card(model: str, pools: list[PoolView], created: int) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": OWNER,
        "pools": [p.pool_id for p in pools],
        "context_length": max(p.ctx for p in pools),
        "capabilities": {f: any(f in p.features for p in pools) for f in ENGINE_FEATURES},
    }


def serving_pools(views: Iterable[PoolView], model: str) -> list[PoolView]:
    """Return the pools whose model id or pool id is ``model``. Pure."""
    return [v for v in views if serves_model_ref(model, v.model, v.pool_id)]


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models -> {"object": "list", "data": [model cards]}."""
    views = request.app[ORCH].pool_views()
    cards = model_cards(views, request.app[MODELS_CREATED])
    return dict_response({"object": "list", "data": cards}, status=200)


async def get_model(request: web.Request) -> web.Response:
    """GET /v1/models/{model_id} -> one model card; raises the 404 model_not_found."""
    model_id = request.match_info["model_id"]
    views = request.app[ORCH].pool_views()
    for card in model_cards(views, request.app[MODELS_CREATED]):
        if card["id"] == model_id:
            return dict_response(card, status=200)
    raise model_not_found(model_id)


# ---- completions -------------------------------------------------------------------


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions -> chat.completion JSON, or chat.completion.chunk SSE."""
    body = supported_fields(await _body(request, "messages"), ChatCompletionRequest)
    req = ChatCompletionRequest.model_validate(body)
    return await _complete(request, req)


async def completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/completions -> text_completion JSON, or text_completion SSE chunks."""
    body = supported_fields(await _body(request, "prompt"), CompletionRequest)
    req = CompletionRequest.model_validate(body)
    return await _complete(request, req)


async def _body(request: web.Request, content: str) -> Any:
    data = await request.app[READ_JSON](request)
    if data is None:
        raise InvalidParams(
            f"request body is empty; send a JSON object with 'model' and '{content}'"
        )
    return data


async def _complete(request: web.Request, req: OpenAIRequest) -> web.StreamResponse:
    orch = request.app[ORCH]
    pools = serving_pools(orch.pool_views(), req.model)
    if not pools:
        raise model_not_found(req.model)
    task = to_task_request(req, req.model, max(p.ctx for p in pools))
    admission = orch.submit(
        task, identity=request[IDENTITY], correlation_id=request[CORRELATION_ID], api="openai"
    )
    task_id = str(admission.task_id)
    handle = orch.open_stream(task_id)
    answer = _Answer(
        chat=isinstance(req, ChatCompletionRequest),
        task_id=task_id,
        model=_model_name(pools, admission.pool_id, req.model),
        prompt_tokens=handle.tokens_in,
    )
    headers = {POOL_HEADER: admission.pool_id, TASK_HEADER: task_id}
    if req.streaming:
        return await _stream(request, handle, answer, req.include_usage, headers)
    return await _whole(request, handle, answer, headers)


def _model_name(pools: list[PoolView], pool_id: str, asked: str) -> str:
    return next((p.model for p in pools if p.pool_id == pool_id and p.model), asked)


class _Answer:
    """What every rendering of one answer needs."""

    __slots__ = ("chat", "completion_id", "created", "model", "prompt_tokens")

    def __init__(self, *, chat: bool, task_id: str, model: str, prompt_tokens: int) -> None:
        self.chat = chat
        self.completion_id = ("chatcmpl-" if chat else "cmpl-") + task_id
        self.created = int(time.time())
        self.model = model
        self.prompt_tokens = prompt_tokens


def stream_options(request: web.Request) -> StreamOptions:
    """Return how streams are served under the settings in force."""
    settings = request.app[SETTINGS].current
    return StreamOptions(
        heartbeat_ms=settings.sse_heartbeat_ms,
        microbatch_ms=settings.sse_microbatch_ms,
        cancel_on_disconnect=settings.cancel_on_disconnect,
    )


async def _stream(
    request: web.Request,
    handle: StreamHandle,
    answer: _Answer,
    include_usage: bool,
    headers: dict[str, str],
) -> web.StreamResponse:
    renderer = ChunkRenderer(
        chat=answer.chat,
        completion_id=answer.completion_id,
        created=answer.created,
        model=answer.model,
        include_usage=include_usage,
    )
    frames = OpenAIFrames(renderer, answer.prompt_tokens)
    options = stream_options(request)
    return await serve_stream(
        request, handle, request.app[STREAMS], options, headers, frames=frames
    )


async def _whole(
    request: web.Request, handle: StreamHandle, answer: _Answer, headers: dict[str, str]
) -> web.Response:
    try:
        done = await collect(request, handle, request.app[STREAMS], stream_options(request))
    except ConnectionResetError:
        return web.Response(status=CLIENT_GONE_STATUS)
    if answer.chat:
        message: dict[str, Any] = {"role": "assistant", "content": done.text}
        if done.tool_calls:
            message["content"] = done.text or None
            message["tool_calls"] = done.tool_calls
        choice = {"index": 0, "message": message, "logprobs": done.logprobs}
    else:
        choice = {"index": 0, "text": done.text, "logprobs": done.logprobs}
    choice["finish_reason"] = done.finish_reason
    body: dict[str, Any] = {
        "id": answer.completion_id,
        "object": "chat.completion" if answer.chat else "text_completion",
        "created": answer.created,
        "model": answer.model,
    }
    if answer.chat:
        body["system_fingerprint"] = None
    body["choices"] = [choice]
    body["usage"] = usage(answer.prompt_tokens, done.tokens_out)
    return dict_response(body, status=200, headers=headers)


OPENAI_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/v1/models", list_models),
    ("GET", "/v1/models/{model_id}", get_model),
    ("POST", "/v1/chat/completions", chat_completions),
    ("POST", "/v1/completions", completions),
)


def add_openai_routes(app: web.Application, read_json: ReadJson) -> None:
    """Serve the OpenAI-compatible routes on ``app``; ``read_json`` parses bodies.

    Never blocks. The OpenAI error shape comes from the ``openai_errors``
    middleware, which the application must also install.
    """
    app[MODELS_CREATED] = int(time.time())
    app[READ_JSON] = read_json
    for method, path, handler in OPENAI_ROUTES:
        app.router.add_route(method, path, handler)
