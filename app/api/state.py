"""Typed keys of the application and request state, and the live settings holder."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from aiohttp import web

from app.api.settings import ApiSettings
from app.orchestrator.artifacts_port import ArtifactRegistry
from app.orchestrator.catalog_port import ModelCatalog
from app.orchestrator.service import Orchestrator

if TYPE_CHECKING:
    from app.api.sse import LiveStreams


class SettingsBox:
    """The settings in force; ``ApiServer.rebind`` swaps them without a restart.

    Holds the SHA-256 digest of the token so requests never hash the secret twice
    and nothing keeps the token in a second place.
    """

    __slots__ = ("_current", "_token_digest")

    def __init__(self, settings: ApiSettings) -> None:
        self._current = settings
        self._token_digest = _digest(settings.auth_token)

    @property
    def current(self) -> ApiSettings:
        """Return the settings in force."""
        return self._current

    @property
    def token_digest(self) -> bytes | None:
        """Return the SHA-256 digest of the configured token, None without one."""
        return self._token_digest

    def replace(self, settings: ApiSettings) -> None:
        """Put ``settings`` in force for every later request."""
        self._current = settings
        self._token_digest = _digest(settings.auth_token)


def _digest(token: str | None) -> bytes | None:
    return hashlib.sha256(token.encode()).digest() if token else None


ORCH = web.AppKey("orch", Orchestrator)
SETTINGS = web.AppKey("settings", SettingsBox)
STREAMS: web.AppKey[LiveStreams] = web.AppKey("streams")
OPENAPI_JSON = web.AppKey("openapi_json", str)
MODELS: web.AppKey[ModelCatalog] = web.AppKey("models")
ARTIFACTS: web.AppKey[ArtifactRegistry] = web.AppKey("artifacts")

CORRELATION_ID = web.RequestKey("correlation_id", str)
IDENTITY = web.RequestKey("identity", str)
