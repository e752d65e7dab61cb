"""The artifact registry's wire models and port (upstream HME-022, OC-CTRL-2065..2067).

An artifact is a JSON document (a plan, summary, diff, trace) stored under the
sha256 of its canonical JSON, so the same artifact always gets the same id.
The store itself is an adapter (``app.engine_host.artifacts``); the API reaches
it through ``ArtifactRegistry``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field

from app.orchestrator.contracts import Strict

ArtifactKind = Literal["plan", "summary", "diff", "trace", "other"]
ARTIFACT_ID_PATTERN = r"^[0-9a-f]{64}$"
Tag = Annotated[str, Field(min_length=1, max_length=64)]


class ArtifactIn(Strict):
    """``POST /v1/artifacts``: what to store."""

    kind: ArtifactKind
    content: dict[str, Any]
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    parent: Annotated[str, Field(pattern=ARTIFACT_ID_PATTERN)] | None = Field(
        default=None, description="The id of an artifact this one derives from"
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class ArtifactRef(Strict):
    """The 201 answer: where the artifact is and what it hashes to."""

    id: str = Field(description="The sha256 of the artifact's canonical JSON (hex)")
    kind: ArtifactKind
    digest: str = Field(description="'sha256:' + id")
    created_ms: int = Field(description="When it was first stored (Unix ms)")
    tags: list[str]
    size_bytes: int


class StoredArtifact(Strict):
    """``GET /v1/artifacts/{id}``: the artifact and its reference fields."""

    id: str
    digest: str
    created_ms: int
    kind: ArtifactKind
    content: dict[str, Any]
    tags: list[str]
    parent: str | None
    metadata: dict[str, Any]


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
"""The canonical encoder, built once (``json.dumps`` with options builds one per call)."""


def canonical_bytes(artifact: ArtifactIn) -> bytes:
    """Return the artifact's canonical JSON (sorted keys, no spaces, UTF-8). Pure."""
    return _CANONICAL(artifact.model_dump(mode="json")).encode()


def artifact_id(canonical: bytes) -> str:
    """Return the content address (sha256 hex) of canonical artifact bytes. Pure."""
    return hashlib.sha256(canonical).hexdigest()


class ArtifactRegistry(Protocol):
    """Stores and returns artifacts; implementations must not block the loop."""

    max_artifact_bytes: int  # the size cap of one artifact (its canonical JSON)

    async def put(self, artifact: ArtifactIn) -> ArtifactRef:
        """Store ``artifact`` (idempotent); raises OrchError 413 over the size cap."""
        ...

    async def get(self, ident: str) -> StoredArtifact:
        """Return the artifact ``ident``; raises NotFound."""
        ...
