"""The catalog service behind the API and the UI (implements ``ModelCatalog``).

Owns the download jobs (one asyncio task each, on the backend loop), the hub
search cache and the catalog metrics; every disk or hub call runs in a worker
thread. A download becomes a catalog entry only once it is whole, verified and
passes the GGUF checks; a canceled one leaves neither a file nor an entry.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine_host.catalog import Catalog, CatalogRecord, ModelState
from app.engine_host.downloads import (
    DownloadCanceled,
    Downloader,
    DownloadFailed,
    Progress,
    normal_digest,
    remove_partials,
    sha256_of,
)
from app.engine_host.gguf_info import GgufError, GgufInfo, quantization_name, read_gguf
from app.orchestrator.catalog_port import (
    CatalogModel,
    CreateModel,
    CreateResult,
    Download,
    DownloadState,
    Manifest,
    SearchFile,
    SearchHit,
    SearchResult,
)
from app.orchestrator.errors import Conflict, InvalidParams, NotFound
from app.orchestrator.metrics import OrchMetrics
from app.orchestrator.model_refs import ModelRef, hf_ref, parse_ref
from app.orchestrator.vram import ModelShape, estimate_vram, fit_on

log = logging.getLogger(__name__)

SEARCH_TTL_S = 60.0
_QUANT_WORDS = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_0",
                "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_XS", "F16", "BF16", "F32")  # fmt: skip
Remember = Callable[[str, str], Awaitable[None]]
AddPool = Callable[[str, str, str], Awaitable[None]]


@dataclass
class _Job:
    id: str
    ref: ModelRef
    progress: Progress
    state: DownloadState = "running"
    error: str | None = None
    model_id: str | None = None
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def view(self) -> Download:
        p = self.progress
        return Download(
            id=self.id, ref=self.ref.text, state=self.state, bytes_done=p.done,
            bytes_total=p.total, rate_bytes_per_s=p.rate, eta_s=p.eta_s, error=self.error,
            model_id=self.model_id,
        )  # fmt: skip


class ModelStore:
    """Catalog, downloads and search for one app. Methods run on the backend loop."""

    def __init__(
        self,
        catalog: Catalog,
        folder: Path,
        downloader: Downloader,
        *,
        orch: Any = None,
        metrics: OrchMetrics | None = None,
        remember: Remember | None = None,
        add_pool: AddPool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.folder = folder
        self._downloader = downloader
        self._orch = orch
        self._metrics = metrics
        self._remember = remember
        self._add_pool = add_pool
        self._clock = clock
        self._jobs: dict[str, _Job] = {}
        self._ids = itertools.count(1)
        self._search_cache: dict[str, tuple[float, SearchResult]] = {}

    # ---- catalog ----

    async def list_models(self) -> list[CatalogModel]:
        """Return every catalog model with who uses it and where it fits."""
        records = await asyncio.to_thread(self.catalog.list)
        return [self.view(r) for r in records]

    async def get_model(self, model_id: str) -> CatalogModel:
        """Return one model; raises NotFound."""
        return self.view(await self._record(model_id))

    async def _record(self, model_id: str) -> CatalogRecord:
        record = await asyncio.to_thread(self.catalog.get, model_id)
        if record is None:
            raise NotFound("catalog model", model_id)
        return record

    async def create(self, body: CreateModel) -> CreateResult:
        """Add a local GGUF file, or start downloading a remote ref (``hf:``, ``https:``).

        Raises InvalidParams with one sentence (bad ref, bad digest, bad file).
        """
        ref = _parse(body.model_ref)
        try:
            digest = normal_digest(body.digest)
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None
        known = await asyncio.to_thread(self.catalog.find, ref.text)
        if known is not None:
            return CreateResult(model=self.view(known))
        if not ref.is_remote:
            return CreateResult(model=await self._add_local(ref, digest, body.id or ""))
        if ref.kind == "hf" and not ref.file:
            files = await self._repo_files(ref.repo)
            names = ", ".join(f.file for f in files) or "none"
            raise InvalidParams(f"pick a file of {ref.repo}: hf:{ref.repo}/FILE.gguf ({names})")
        return CreateResult(download=self._start(ref, digest, body.id or ""))

    async def _add_local(self, ref: ModelRef, digest: str | None, model_id: str) -> CatalogModel:
        info = await _checked(Path(ref.path), ref.path)
        actual = await asyncio.to_thread(sha256_of, info.path)
        if digest is not None and digest != actual:
            raise InvalidParams(f"{ref.path} does not match the given sha256; check the digest")
        record = await asyncio.to_thread(
            self.catalog.add, ref.text, info, actual, downloaded=False, model_id=model_id
        )
        self._set_state_metric(record)
        return self.view(record)

    async def verify(self, model_id: str) -> CatalogModel:
        """Re-check the file's sha256 and GGUF header; raises InvalidParams when it fails."""
        record = await self._record(model_id)
        try:
            await _checked(record.path, record.path.name)
            actual = await asyncio.to_thread(sha256_of, record.path)
        except (InvalidParams, OSError) as exc:
            self._count("fail", "unreadable")
            raise InvalidParams(f"verification of {model_id} failed: {exc}") from None
        if actual != record.sha256:
            self._count("fail", "digest_mismatch")
            raise InvalidParams(
                f"verification of {model_id} failed: the file's sha256 changed since it was "
                "added; download it again"
            )
        self._count("pass", "ok")
        return self.view(record)

    async def set_state(self, model_id: str, state: str) -> CatalogModel:
        """Set Active / Retired; raises NotFound."""
        await self._record(model_id)
        record = await asyncio.to_thread(self.catalog.set_state, model_id, ModelState(state))
        assert record is not None
        self._set_state_metric(record)
        return self.view(record)

    async def delete(self, model_id: str) -> None:
        """Remove the entry (and the file when the catalog downloaded it).

        Raises NotFound, or Conflict while a pool serves the model.
        """
        record = await self._record(model_id)
        users = self._users(record)
        if users:
            raise Conflict(
                f"model {model_id} is in use by pool {', '.join(users)}; reload that pool "
                "with another model first"
            )
        await asyncio.to_thread(self.catalog.remove, model_id)
        if record.downloaded:
            await asyncio.to_thread(record.path.unlink, missing_ok=True)
        if self._metrics is not None:
            for state in ModelState:
                self._metrics.model_state.labels(model_id, state.value).set(0)

    async def resolve(self, model_ref: str) -> str:
        """Return the local file for a catalog ref, id or path (and mark it used).

        Raises InvalidParams naming how to get a remote ref that is not downloaded.
        """
        ref = _parse(model_ref)
        record = await asyncio.to_thread(self.catalog.find, ref.text)
        if record is not None:
            await asyncio.to_thread(self.catalog.touch, record.id)
            return str(record.path)
        if ref.is_remote:
            raise InvalidParams(
                f"{ref.text} is not downloaded yet; run `llama-orch pull {ref.text}` or get it "
                "in the Models view"
            )
        return ref.path

    async def remember_pool_model(self, pool_id: str, model_ref: str) -> None:
        """Write the pool's model to the config file (no-op without a config)."""
        if self._remember is not None:
            await self._remember(pool_id, model_ref)

    async def new_pool(self, gpu_index: int, model_id: str) -> str:
        """Add a llamacpp pool for ``model_id`` on GPU ``gpu_index`` to the config.

        Raises NotFound, or InvalidParams when there is no config file to write.
        """
        record = await self._record(model_id)
        if self._add_pool is None:
            raise InvalidParams("this server has no config file to add a pool to")
        pool_id = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"gpu{gpu_index}-{record.id}")[:64]
        await self._add_pool(pool_id, record.ref, str(gpu_index))
        return f"added pool {pool_id} on GPU {gpu_index} to the config; restart to start it"

    # ---- downloads ----

    def downloads(self) -> list[Download]:
        """Return every download of this run, newest first."""
        return [j.view() for j in reversed(self._jobs.values())]

    def download(self, download_id: str) -> Download:
        """Return one download; raises NotFound."""
        return self._job(download_id).view()

    async def wait_download(self, download_id: str) -> Download:
        """Wait until the download ends (done, failed or canceled); raises NotFound."""
        job = self._job(download_id)
        await job.done.wait()
        return job.view()

    def cancel_download(self, download_id: str) -> Download:
        """Cancel a running download (no partial file, no entry); raises NotFound."""
        job = self._job(download_id)
        if job.state in ("running", "verifying"):
            job.progress.cancel()
        return job.view()

    def _job(self, download_id: str) -> _Job:
        job = self._jobs.get(download_id)
        if job is None:
            raise NotFound("download", download_id)
        return job

    def _start(self, ref: ModelRef, digest: str | None, model_id: str) -> Download:
        running = [j for j in self._jobs.values() if j.ref == ref and j.state == "running"]
        if running:
            return running[0].view()
        job = _Job(f"dl-{next(self._ids)}", ref, Progress(clock=self._clock))
        self._jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, digest, model_id), name=job.id)
        return job.view()

    async def _run(self, job: _Job, digest: str | None, model_id: str) -> None:
        try:
            fetched = await self._downloader.fetch(job.ref, self.folder, job.progress, digest)
            job.state = "verifying"
            info = await _checked(fetched.path, fetched.path.name, delete=True)
            record = await asyncio.to_thread(
                self.catalog.add, job.ref.text, info, fetched.sha256, downloaded=True,
                model_id=model_id,
            )  # fmt: skip
            self._set_state_metric(record)
            job.state, job.model_id = "done", record.id
        except (DownloadCanceled, asyncio.CancelledError):
            job.state = "canceled"
            await asyncio.to_thread(remove_partials, self.folder, job.ref)
        except (DownloadFailed, InvalidParams) as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:
            log.exception("download %s failed", job.id)
            job.state, job.error = "failed", f"the download failed ({type(exc).__name__})"
        finally:
            job.done.set()

    async def close(self) -> None:
        """Cancel running downloads and wait for them (at shutdown)."""
        for job in self._jobs.values():
            job.progress.cancel()
        await asyncio.gather(*(j.done.wait() for j in self._jobs.values() if j.task))

    # ---- search ----

    async def search(self, query: str) -> SearchResult:
        """Return GGUF repos matching ``query`` with their files (cached for a minute).

        Never raises for the network: ``error`` says the hub cannot be reached.
        """
        query = query.strip()
        cached = self._search_cache.get(query)
        if cached is not None and self._clock() - cached[0] < SEARCH_TTL_S:
            return cached[1]
        try:
            hits = await asyncio.to_thread(self._search_hub, query)
        except Exception as exc:
            log.info("hub search failed: %s", type(exc).__name__)
            return SearchResult(
                query=query,
                error="cannot reach the hub; check the network (or HF_ENDPOINT); "
                "local models still work",
            )
        result = SearchResult(query=query, hits=hits)
        self._search_cache[query] = (self._clock(), result)
        return result

    def _search_hub(self, query: str) -> list[SearchHit]:
        self._downloader.probe()
        api = self._downloader.hf_api()
        models = list(api.list_models(search=query or None, filter="gguf", limit=20))
        return [
            SearchHit(repo=m.id, downloads=m.downloads, likes=m.likes, files=self._files(api, m.id))
            for m in models
        ]

    async def _repo_files(self, repo: str) -> list[SearchFile]:
        try:
            return await asyncio.to_thread(self._files, self._downloader.hf_api(), repo)
        except Exception:
            raise InvalidParams(f"cannot list the files of {repo} on the hub") from None

    @staticmethod
    def _files(api: Any, repo: str) -> list[SearchFile]:
        files = []
        for entry in api.list_repo_tree(repo, recursive=True):
            path = getattr(entry, "path", "")
            if path.lower().endswith(".gguf"):
                size = getattr(entry, "size", None)
                files.append(SearchFile(file=path, ref=hf_ref(repo, path), size_bytes=size,
                                        quantization=_quant_from_name(path)))  # fmt: skip
        return files

    # ---- views and metrics ----

    def view(self, record: CatalogRecord) -> CatalogModel:
        """Return the wire view of ``record`` (with its users and VRAM fit when known)."""
        return CatalogModel(
            id=record.id, digest=f"sha256:{record.sha256}", source_url=record.ref,
            manifests=[Manifest(digest=f"sha256:{record.sha256}", size_bytes=record.size_bytes)],
            state=record.state.value, path=str(record.path), size_bytes=record.size_bytes,
            added_at=record.added_at, last_used_at=record.last_used_at,
            downloaded=record.downloaded, gguf=dict(record.metadata),
            used_by=self._users(record), fits=self._fits(record),
        )  # fmt: skip

    def _users(self, record: CatalogRecord) -> list[str]:
        if self._orch is None:
            return []
        names = (record.path.stem, str(record.path))
        return [v.pool_id for v in self._orch.pool_views() if v.model in names]

    def _fits(self, record: CatalogRecord, ctx: int = 4096, slots: int = 1) -> list[str]:
        shape = shape_of(record)
        if self._orch is None or shape is None:
            return []
        ctx = min(ctx, int(record.metadata.get("context_length") or ctx))
        need = estimate_vram(shape, ctx, slots).total_bytes
        gpus = self._orch.gpu_inventory().gpus
        return [fit_on(f"GPU {g.index}", need, g.vram_free_bytes).text for g in gpus]

    def _count(self, result: str, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.catalog_verifications.labels(result, reason, "llamacpp").inc()

    def _set_state_metric(self, record: CatalogRecord) -> None:
        if self._metrics is not None:
            for state in ModelState:
                value = 1 if state is record.state else 0
                self._metrics.model_state.labels(record.id, state.value).set(value)


def shape_of(record: CatalogRecord) -> ModelShape | None:
    """Return the VRAM numbers of a catalog model, None when its metadata lacks them."""
    m = record.metadata
    layers, heads = m.get("block_count"), m.get("head_count")
    kv_heads, embd = m.get("head_count_kv") or heads, m.get("embedding_length")
    if not (layers and heads and kv_heads and embd):
        return None
    return ModelShape(int(m.get("tensor_bytes") or 0), int(layers), int(kv_heads), embd // heads)


def _parse(text: str) -> ModelRef:
    if not text:
        raise InvalidParams(
            "give a model: source_url = a .gguf path, hf:OWNER/REPO/FILE.gguf or https://..."
        )
    try:
        return parse_ref(text)
    except ValueError as exc:
        raise InvalidParams(str(exc)) from None


async def _checked(path: Path, shown_as: str, *, delete: bool = False) -> GgufInfo:
    try:
        return await asyncio.to_thread(read_gguf, path, shown_as)
    except GgufError as exc:
        if delete:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        raise InvalidParams(str(exc)) from None


def _quant_from_name(name: str) -> str:
    upper = name.upper()
    found = [q for q in _QUANT_WORDS if q in upper]
    return max(found, key=len) if found else quantization_name(None)
