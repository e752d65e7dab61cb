"""Catalog routes (thin handlers over the ``ModelCatalog`` port) and their OpenAPI operations.

Served only when the app is built with a catalog (``make_app(..., models=...)``).
Download progress is a polling route and an SSE stream of ``progress`` events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from app.api.render import dict_response, dumps, model_response
from app.api.state import MODELS
from app.orchestrator.catalog_port import (
    CatalogModel,
    CreateModel,
    CreateResult,
    Download,
    ModelCatalog,
    SearchResult,
    SetState,
)
from app.orchestrator.errors import InvalidParams

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Parse = Callable[..., Awaitable[object]]
PROGRESS_INTERVAL_S = 0.5
_TERMINAL = ("done", "failed", "canceled")


def _models(request: web.Request) -> ModelCatalog:
    return request.app[MODELS]


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/catalog/models -> 200 [CatalogModel]."""
    return model_response(await _models(request).list_models())


def create_model(parse: Parse) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        """POST /v1/catalog/models -> 201 {model} (a local file) or 202 {download}."""
        body = await parse(request, CreateModel)
        assert isinstance(body, CreateModel)
        result = await _models(request).create(body)
        return model_response(result, status=201 if result.model else 202, exclude_none=True)

    return handler


async def get_model(request: web.Request) -> web.Response:
    """GET /v1/catalog/models/{id} -> 200 CatalogModel."""
    return model_response(await _models(request).get_model(request.match_info["model_id"]))


async def delete_model(request: web.Request) -> web.Response:
    """DELETE /v1/catalog/models/{id} -> 204 (the file too when the catalog downloaded it)."""
    await _models(request).delete(request.match_info["model_id"])
    return web.Response(status=204)


async def verify_model(request: web.Request) -> web.Response:
    """POST /v1/catalog/models/{id}/verify -> 202 {status, model}: digest and GGUF re-checked."""
    model = await _models(request).verify(request.match_info["model_id"])
    return dict_response({"status": "verified", "model": model.model_dump(mode="json")}, status=202)


def set_state(parse: Parse) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        """POST /v1/catalog/models/{id}/state {state} -> 202 {status, model}."""
        body = await parse(request, SetState)
        assert isinstance(body, SetState)
        model = await _models(request).set_state(request.match_info["model_id"], body.state)
        return dict_response(
            {"status": "accepted", "model": model.model_dump(mode="json")}, status=202
        )

    return handler


async def search(request: web.Request) -> web.Response:
    """GET /v1/catalog/search?q=... -> 200 SearchResult (``error`` set without network)."""
    query = request.query.get("q", "")
    if len(query) > 200:
        raise InvalidParams("query parameter 'q' must be at most 200 characters")
    return model_response(await _models(request).search(query))


async def list_downloads(request: web.Request) -> web.Response:
    """GET /v1/catalog/downloads -> 200 [Download]."""
    return model_response(_models(request).downloads())


async def get_download(request: web.Request) -> web.Response:
    """GET /v1/catalog/downloads/{id} -> 200 Download (poll it for progress)."""
    return model_response(_models(request).download(request.match_info["download_id"]))


async def cancel_download(request: web.Request) -> web.Response:
    """POST /v1/catalog/downloads/{id}/cancel -> 202 Download."""
    view = _models(request).cancel_download(request.match_info["download_id"])
    return model_response(view, status=202)


async def download_events(request: web.Request) -> web.StreamResponse:
    """GET /v1/catalog/downloads/{id}/events: SSE ``progress`` events until it ends."""
    models = _models(request)
    view = models.download(request.match_info["download_id"])
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    while True:
        await resp.write(
            f"event: progress\ndata: {dumps(view.model_dump(mode='json'))}\n\n".encode()
        )
        if view.state in _TERMINAL:
            break
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        view = models.download(view.id)
    await resp.write_eof()
    return resp


def catalog_routes(parse: Parse) -> tuple[tuple[str, str, Handler], ...]:
    """Return the catalog routes; ``parse`` validates a JSON body (app.parse_body)."""
    return (
        ("GET", "/v1/catalog/models", list_models),
        ("POST", "/v1/catalog/models", create_model(parse)),
        ("GET", "/v1/catalog/models/{model_id}", get_model),
        ("DELETE", "/v1/catalog/models/{model_id}", delete_model),
        ("POST", "/v1/catalog/models/{model_id}/verify", verify_model),
        ("POST", "/v1/catalog/models/{model_id}/state", set_state(parse)),
        ("GET", "/v1/catalog/search", search),
        ("GET", "/v1/catalog/downloads", list_downloads),
        ("GET", "/v1/catalog/downloads/{download_id}", get_download),
        ("GET", "/v1/catalog/downloads/{download_id}/events", download_events),
        ("POST", "/v1/catalog/downloads/{download_id}/cancel", cancel_download),
    )


CATALOG_MODELS = (CatalogModel, CreateModel, CreateResult, Download, SearchResult, SetState)
"""The wire models the catalog operations name (for the OpenAPI components)."""
