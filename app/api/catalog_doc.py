"""OpenAPI operations and schemas of the catalog routes (see app.api.catalog)."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api.openapi import (
    REF,
    Schema,
    _array,
    _op,
    body,
    empty_response,
    error_responses,
    json_response,
    path_param,
    ref,
)
from app.orchestrator.catalog_port import (
    CatalogModel,
    CreateModel,
    CreateResult,
    Download,
    SearchResult,
    SetState,
)

MODEL_ID = path_param("model_id", "A catalog model id from GET /v1/catalog/models")
DOWNLOAD_ID = path_param("download_id", "A download id from POST /v1/catalog/models")
_TAG = "catalog"
_STATUS_MODEL: Schema = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "model": ref(CatalogModel)},
    "required": ["status", "model"],
}
_QUERY: Schema = {
    "name": "q", "in": "query", "required": False,
    "description": "Words to look for in GGUF repository names",
    "schema": {"type": "string", "maxLength": 200},
}  # fmt: skip


def catalog_schemas() -> dict[str, Schema]:
    """Return the component schemas of the catalog wire models."""
    models: list[type[BaseModel]] = [CreateModel, SetState]
    pairs = [(m, "validation") for m in models]
    pairs += [(m, "serialization") for m in (CatalogModel, CreateResult, Download, SearchResult)]
    _, top = models_json_schema(pairs, ref_template=REF)  # type: ignore[arg-type]
    return dict(top.get("$defs", {}))


def catalog_operations() -> dict[str, dict[str, Schema]]:
    """Return ``{path: {method: operation}}`` for the catalog routes."""
    return {
        "/v1/catalog/models": {
            "get": _op("listCatalogModels", "Local models with metadata, use and VRAM fit", _TAG,
                       {"200": json_response("Models", _array(CatalogModel)), **error_responses()}),
            "post": _op(
                "createCatalogModel", "Add a local GGUF file, or start a download (hf:, https:)",
                _TAG,
                {"201": json_response("Added (a local file)", ref(CreateResult)),
                 "202": json_response("Download started", ref(CreateResult)),
                 **error_responses(400, 413)},
                request=body(CreateModel),
            ),
        },
        "/v1/catalog/models/{model_id}": {
            "get": _op("getCatalogModel", "One model: digest, manifest, GGUF metadata", _TAG,
                       {"200": json_response("The model", ref(CatalogModel)),
                        **error_responses(404)}, params=(MODEL_ID,)),
            "delete": _op("deleteCatalogModel", "Forget a model (and delete a downloaded file)",
                          _TAG, {"204": empty_response("Deleted"), **error_responses(404, 409)},
                          params=(MODEL_ID,)),
        },
        "/v1/catalog/models/{model_id}/verify": {
            "post": _op("verifyCatalogModel", "Re-check the file's sha256 and GGUF header", _TAG,
                        {"202": json_response("Verified", _STATUS_MODEL),
                         **error_responses(400, 404)}, params=(MODEL_ID,)),
        },
        "/v1/catalog/models/{model_id}/state": {
            "post": _op("setCatalogModelState", "Set Active or Retired", _TAG,
                        {"202": json_response("Accepted", _STATUS_MODEL),
                         **error_responses(400, 404, 413)},
                        params=(MODEL_ID,), request=body(SetState)),
        },
        "/v1/catalog/search": {
            "get": _op("searchCatalog", "Search the Hugging Face hub for GGUF repositories", _TAG,
                       {"200": json_response("Hits, or error when the hub is unreachable",
                                             ref(SearchResult)),
                        **error_responses(400)}, params=(_QUERY,)),
        },
        "/v1/catalog/downloads": {
            "get": _op("listDownloads", "Downloads of this run, newest first", _TAG,
                       {"200": json_response("Downloads", _array(Download)), **error_responses()}),
        },
        "/v1/catalog/downloads/{download_id}": {
            "get": _op("getDownload", "A download's bytes, rate and ETA (poll it)", _TAG,
                       {"200": json_response("Progress", ref(Download)), **error_responses(404)},
                       params=(DOWNLOAD_ID,)),
        },
        "/v1/catalog/downloads/{download_id}/events": {
            "get": _op("streamDownload", "SSE `progress` events (a Download each) until it ends",
                       _TAG,
                       {"200": {"description": "Server-Sent Events",
                                "headers": json_response("", {})["headers"],
                                "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                        **error_responses(404)}, params=(DOWNLOAD_ID,)),
        },
        "/v1/catalog/downloads/{download_id}/cancel": {
            "post": _op("cancelDownload", "Cancel: no partial file, no catalog entry", _TAG,
                        {"202": json_response("Canceling", ref(Download)), **error_responses(404)},
                        params=(DOWNLOAD_ID,)),
        },
    }  # fmt: skip
