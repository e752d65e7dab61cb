"""The Models view's way to the catalog: ``ModelsClient`` and its embedded implementation.

Every method is a coroutine awaited on the Qt loop; ``EmbeddedModels`` runs the
catalog's work on the backend loop through the bridge's ``call`` (tests pass a
``call`` that awaits in place). Refusals raise OrchError subclasses with one
plain sentence.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from app.orchestrator.catalog_port import (
    CatalogModel,
    CreateModel,
    CreateResult,
    Download,
    ModelCatalog,
    SearchResult,
)
from app.orchestrator.contracts import ReloadResult

T = TypeVar("T")
Call = Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]]


class ModelsClient(Protocol):
    async def list_models(self) -> list[CatalogModel]: ...

    async def search(self, query: str) -> SearchResult: ...

    async def get(self, ref: str) -> CreateResult: ...

    async def downloads(self) -> list[Download]: ...

    async def cancel(self, download_id: str) -> Download: ...

    async def verify(self, model_id: str) -> CatalogModel: ...

    async def set_state(self, model_id: str, state: str) -> CatalogModel: ...

    async def delete(self, model_id: str) -> None: ...

    async def use_on_pool(self, pool_id: str, ref: str, persist: bool = True) -> ReloadResult: ...

    async def new_pool(self, gpu_index: int, model_id: str) -> str: ...


class EmbeddedModels:
    """``ModelsClient`` over the in-process catalog and orchestrator."""

    def __init__(self, catalog: ModelCatalog, orch: Any, call: Call) -> None:
        self._catalog = catalog
        self._orch = orch
        self._call = call

    async def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        result: T = await self._call(coro)
        return result

    async def list_models(self) -> list[CatalogModel]:
        return await self._run(self._catalog.list_models())

    async def search(self, query: str) -> SearchResult:
        return await self._run(self._catalog.search(query))

    async def get(self, ref: str) -> CreateResult:
        """Start a download of ``ref`` (or add a local file); returns what started."""
        return await self._run(self._catalog.create(CreateModel(source_url=ref)))

    async def downloads(self) -> list[Download]:
        return await self._run(_now(self._catalog.downloads))

    async def cancel(self, download_id: str) -> Download:
        return await self._run(_now(self._catalog.cancel_download, download_id))

    async def verify(self, model_id: str) -> CatalogModel:
        return await self._run(self._catalog.verify(model_id))

    async def set_state(self, model_id: str, state: str) -> CatalogModel:
        return await self._run(self._catalog.set_state(model_id, state))

    async def delete(self, model_id: str) -> None:
        await self._run(self._catalog.delete(model_id))

    async def use_on_pool(self, pool_id: str, ref: str, persist: bool = True) -> ReloadResult:
        """Reload ``pool_id`` with the catalog model ``ref``; with ``persist`` the
        choice is written to the config file once the reload worked."""
        return await self._run(reload_with(self._catalog, self._orch, pool_id, ref, persist))

    async def new_pool(self, gpu_index: int, model_id: str) -> str:
        """Add a pool for ``model_id`` on GPU ``gpu_index`` to the config (next start)."""
        return await self._run(self._catalog.new_pool(gpu_index, model_id))


async def reload_with(
    catalog: ModelCatalog, orch: Any, pool_id: str, ref: str, persist: bool
) -> ReloadResult:
    """Resolve ``ref`` in the catalog, reload the pool, and remember the choice."""
    result: ReloadResult = await orch.reload(pool_id, await catalog.resolve(ref))
    if result.ok and persist:
        await catalog.remember_pool_model(pool_id, ref)
    return result


async def _now(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)
