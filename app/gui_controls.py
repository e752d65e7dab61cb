"""The window's hold on what lies beyond the core: settings, the API server.

Part of the composition root (built by app.main for the GUI); implements
app.ui.bridge.AppControls without importing Qt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app.config import (
    LLAMACPP_KEYS,
    ConfigError,
    PoolSettings,
    Settings,
    parse_settings,
    save_settings,
    to_toml,
)
from app.logs import REDACTOR
from app.orchestrator.artifacts_port import ArtifactRegistry
from app.orchestrator.catalog_port import ModelCatalog
from app.orchestrator.queues import FullPolicy

if TYPE_CHECKING:
    from app.api.settings import ApiSettings
    from app.main import Backend


class GuiControls:
    """Applies settings from the dialog: validate, save atomically, re-bind."""

    def __init__(
        self,
        backend: Backend,
        config_path: Path,
        log_file: Path,
        api_settings: Callable[[Settings], ApiSettings],
    ) -> None:
        self._backend = backend
        self._config_path = config_path
        self._log_file = log_file
        self._api_settings = api_settings

    def api_url(self) -> str:
        return str(self._backend.api.url)

    def config_path(self) -> str:
        return str(self._config_path)

    def log_path(self) -> str:
        return str(self._log_file)

    def model_catalog(self) -> ModelCatalog | None:
        """Return the backend's model catalog (a ModelStore), None without one."""
        return getattr(self._backend, "models", None)

    def artifact_registry(self) -> ArtifactRegistry | None:
        """Return the backend's artifact store (task transcripts), None without one."""
        return getattr(self._backend, "artifacts", None)

    def current_settings(self) -> Settings:
        return self._backend.settings

    async def apply_settings(self, settings: Settings) -> None:
        """Validate, save (worker thread) and apply ``settings`` without a restart.

        Raises ValueError naming every problem; nothing changes then.
        """
        checked = await asyncio.to_thread(self._revalidate, settings)
        await self._retune_pools(checked)
        await self._backend.api.rebind(self._api_settings(checked))
        await asyncio.to_thread(save_settings, checked, self._config_path)
        self._backend.orch.set_admission(
            checked.admission.queue_capacity, FullPolicy(checked.admission.full_policy)
        )
        REDACTOR.add(checked.auth_token)
        self._backend.settings = checked

    async def _retune_pools(self, new: Settings) -> None:
        """Apply changed llama-server settings of existing pools, one atomic reload each.

        Raises ValueError when a pool's engine does not start with them (it keeps
        serving with the old ones).
        """
        from app.engine_host.llamacpp import LlamaCppEngine
        from app.main import llamacpp_spec
        from app.orchestrator.ports import EngineError

        old = {p.id: p for p in self._backend.settings.pools}
        engines = {e.descriptor.pool_id: e for e in self._backend.engines}
        for pool in new.pools:
            engine = engines.get(pool.id)
            before = old.get(pool.id)
            if not isinstance(engine, LlamaCppEngine) or before is None:
                continue
            if engine_settings(before) == engine_settings(pool):
                continue
            try:
                await engine.retune(llamacpp_spec(new, pool, None))
            except EngineError as exc:
                raise ValueError(f"pool {pool.id}: {exc.message}") from None

    def _revalidate(self, settings: Settings) -> Settings:
        import tomllib

        try:
            data = tomllib.loads(to_toml(settings))
            return parse_settings(data, source=self._config_path)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


def engine_settings(pool: PoolSettings) -> tuple[object, ...]:
    """Return the settings of ``pool`` that its running llama-server was started with."""
    return (pool.slots, pool.ctx, *(getattr(pool, key) for key in LLAMACPP_KEYS))
