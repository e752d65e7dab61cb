"""The model catalog as the API and the UI see it: wire models and one port.

``ModelCatalog`` is implemented by ``app.engine_host.model_store.ModelStore``
(SQLite catalog, downloads, hub search) and injected by the composition root;
the API and the UI's bridge only ever hold this Protocol.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

DownloadState = Literal["running", "verifying", "done", "failed", "canceled"]


class Manifest(BaseModel):
    """One artifact of a catalog model (the upstream contract's shape)."""

    digest: str
    size_bytes: int


class CatalogModel(BaseModel):
    """One catalog model: the upstream fields plus the local details."""

    id: str
    digest: str = Field(description='"sha256:<hex>" of the model file')
    source_url: str = Field(description="the model reference it came from")
    manifests: list[Manifest] = Field(default_factory=list)
    state: Literal["Active", "Retired"] = "Active"
    path: str = ""
    size_bytes: int = 0
    added_at: float = 0.0
    last_used_at: float | None = None
    downloaded: bool = Field(False, description="true when the catalog downloaded the file")
    gguf: dict[str, Any] = Field(default_factory=dict, description="metadata read from the GGUF")
    used_by: list[str] = Field(default_factory=list, description="ids of pools serving it")
    fits: list[str] = Field(default_factory=list, description="the VRAM fit per GPU, in words")


class CreateModel(BaseModel):
    """POST /v1/catalog/models: add a local file or start a download."""

    model_config = ConfigDict(extra="ignore")
    source_url: str | None = Field(None, description="file path, hf:OWNER/REPO/FILE.gguf, https")
    ref: str | None = Field(None, description="alias of source_url")
    digest: str | None = Field(None, description='expected "sha256:<hex>", checked after download')
    id: str | None = Field(None, description="the catalog id to use (default: the file name)")

    @property
    def model_ref(self) -> str:
        return (self.source_url or self.ref or "").strip()


class SetState(BaseModel):
    """POST /v1/catalog/models/{id}/state."""

    state: Literal["Active", "Retired"]
    deadline_ms: int | None = None


class Download(BaseModel):
    """A download's progress, as the API and the UI show it."""

    id: str
    ref: str
    state: DownloadState
    bytes_done: int = 0
    bytes_total: int | None = None
    rate_bytes_per_s: float | None = None
    eta_s: float | None = None
    error: str | None = None
    model_id: str | None = None


class CreateResult(BaseModel):
    """The answer to a create: the model (local file) or the download started."""

    model: CatalogModel | None = None
    download: Download | None = None


class SearchFile(BaseModel):
    """One GGUF file of a hub repository."""

    file: str
    ref: str
    size_bytes: int | None = None
    quantization: str = ""


class SearchHit(BaseModel):
    """One GGUF repository found on the hub."""

    repo: str
    downloads: int | None = None
    likes: int | None = None
    files: list[SearchFile] = Field(default_factory=list)


class SearchResult(BaseModel):
    """GET /v1/catalog/search: the hits, or why the hub could not be asked."""

    query: str
    hits: list[SearchHit] = Field(default_factory=list)
    error: str | None = None


class ModelCatalog(Protocol):
    """What the API and UI ask of the catalog. Raises NotFound / InvalidParams
    (app.orchestrator.errors) with one plain sentence."""

    async def list_models(self) -> list[CatalogModel]: ...

    async def get_model(self, model_id: str) -> CatalogModel: ...

    async def create(self, body: CreateModel) -> CreateResult: ...

    async def verify(self, model_id: str) -> CatalogModel: ...

    async def set_state(self, model_id: str, state: str) -> CatalogModel: ...

    async def delete(self, model_id: str) -> None: ...

    async def search(self, query: str) -> SearchResult: ...

    def downloads(self) -> list[Download]: ...

    def download(self, download_id: str) -> Download: ...

    async def wait_download(self, download_id: str) -> Download: ...

    def cancel_download(self, download_id: str) -> Download: ...

    async def resolve(self, model_ref: str) -> str:
        """Return the local file for ``model_ref`` (a catalog ref, id or path)."""
        ...

    async def remember_pool_model(self, pool_id: str, model_ref: str) -> None:
        """Write the pool's model to the config file (comments kept)."""
        ...

    async def new_pool(self, gpu_index: int, model_id: str) -> str:
        """Add a pool serving ``model_id`` on GPU ``gpu_index`` to the config; returns
        a sentence saying it starts with the next start."""
        ...
