"""Artifact registry routes (thin handlers over the ``ArtifactRegistry`` port) and their
OpenAPI operations. Served only when the app is built with a registry
(``make_app(..., artifacts=...)``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic.json_schema import models_json_schema

from app.api.openapi import REF, Schema, _op, body, error_responses, json_response, path_param, ref
from app.api.render import model_response
from app.api.state import ARTIFACTS
from app.orchestrator.artifacts_port import ArtifactIn, ArtifactRef, StoredArtifact

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Parse = Callable[..., Awaitable[object]]
_TAG = "artifacts"
ARTIFACT_ID = path_param("artifact_id", "An artifact id (sha256 hex) from POST /v1/artifacts")


def create_artifact(parse: Parse) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        """POST /v1/artifacts -> 201 ArtifactRef (the same artifact: the same id)."""
        artifact = await parse(request, ArtifactIn)
        assert isinstance(artifact, ArtifactIn)
        stored = await request.app[ARTIFACTS].put(artifact)
        headers = {"Location": f"/v1/artifacts/{stored.id}"}
        return model_response(stored, status=201, headers=headers)

    return handler


async def get_artifact(request: web.Request) -> web.Response:
    """GET /v1/artifacts/{artifact_id} -> 200 StoredArtifact."""
    return model_response(await request.app[ARTIFACTS].get(request.match_info["artifact_id"]))


def artifact_routes(parse: Parse) -> tuple[tuple[str, str, Handler], ...]:
    """Return the artifact routes; ``parse`` validates a JSON body (app.parse_body)."""
    return (
        ("POST", "/v1/artifacts", create_artifact(parse)),
        ("GET", "/v1/artifacts/{artifact_id}", get_artifact),
    )


def artifact_schemas() -> dict[str, Schema]:
    """Return the component schemas of the artifact wire models."""
    pairs = [(ArtifactIn, "validation"), (ArtifactRef, "serialization"),
             (StoredArtifact, "serialization")]  # fmt: skip
    _, top = models_json_schema(pairs, ref_template=REF)  # type: ignore[arg-type]
    return dict(top.get("$defs", {}))


def artifact_operations() -> dict[str, dict[str, Schema]]:
    """Return ``{path: {method: operation}}`` for the artifact routes."""
    return {
        "/v1/artifacts": {
            "post": _op("createArtifact", "Store an artifact (content-addressed)", _TAG,
                        {"201": json_response("Stored", ref(ArtifactRef), "Location"),
                         **error_responses(400, 413)}, request=body(ArtifactIn)),
        },
        "/v1/artifacts/{artifact_id}": {
            "get": _op("getArtifact", "One stored artifact", _TAG,
                       {"200": json_response("The artifact", ref(StoredArtifact)),
                        **error_responses(404)}, params=(ARTIFACT_ID,)),
        },
    }  # fmt: skip
