"""ApiServer: serves the application on the running loop (shared with Qt in the GUI)."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import socket

from aiohttp import web

from app.api.app import make_app
from app.api.connections import ConnectionGuard, GuardedSite, install_accept_error_reporter
from app.api.settings import ApiSettings, check_bind
from app.api.state import SETTINGS
from app.orchestrator.artifacts_port import ArtifactRegistry
from app.orchestrator.catalog_port import ModelCatalog
from app.orchestrator.service import Orchestrator

log = logging.getLogger("llama_orch.api")

SHUTDOWN_TIMEOUT_S = 5.0


def format_address(host: str, port: int) -> str:
    """Return ``host:port`` with IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_socket(host: str, port: int) -> socket.socket:
    """Return a listening TCP socket on ``host:port`` (port 0 picks a free one).

    Blocks briefly to resolve a host name. Raises OSError naming the address
    and the fix (port in use, address not available).
    """
    address = format_address(host, port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        return socket.create_server(sockaddr[:2], family=family, backlog=128)
    except OSError as exc:
        raise OSError(exc.errno, _listen_error(address, exc)) from exc


def _listen_error(address: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {address}: the address is already in use; stop the other "
            "server or choose another port (--bind HOST:PORT or BIND_ADDR)"
        )
    return f"cannot listen on {address}: {exc.strerror or exc}; check --bind / BIND_ADDR"


class ApiServer:
    """The HTTP server of one orchestrator: start, stop, and rebind without a restart.

    All methods run on the caller's (already running) event loop.
    """

    def __init__(
        self,
        orch: Orchestrator,
        settings: ApiSettings,
        models: ModelCatalog | None = None,
        artifacts: ArtifactRegistry | None = None,
    ) -> None:
        self._orch = orch
        self._settings = settings
        self._models = models
        self._artifacts = artifacts
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._guard: ConnectionGuard | None = None
        self._port = settings.bind_port

    @property
    def settings(self) -> ApiSettings:
        """Return the settings in force."""
        return self._settings

    @property
    def url(self) -> str:
        """Return the base URL, with the real port once started (port 0 resolved)."""
        return "http://" + format_address(self._settings.bind_host, self._port)

    @property
    def app(self) -> web.Application | None:
        """Return the application being served, None when stopped."""
        return self._app

    @property
    def running(self) -> bool:
        """Return True while the server listens."""
        return self._runner is not None

    async def start(self) -> None:
        """Listen on the configured address; awaits the start-up.

        Raises UnsafeBind for a non-loopback bind without a token, OSError when
        the address cannot be bound (message names it). Starting twice is a no-op.
        """
        if self._runner is not None:
            return
        check_bind(self._settings)
        install_accept_error_reporter(asyncio.get_running_loop())
        app = make_app(self._orch, self._settings, models=self._models, artifacts=self._artifacts)
        limits = self._settings.limits
        self._guard = ConnectionGuard(limits)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            keepalive_timeout=limits.keepalive_s,
        )
        await runner.setup()
        try:
            self._site, self._port = await self._open_site(runner, self._settings)
        except BaseException:
            await runner.cleanup()
            raise
        self._app, self._runner = app, runner
        log.info("API listening on %s", self.url, extra={"fields": {"url": self.url}})

    async def _open_site(
        self, runner: web.AppRunner, settings: ApiSettings
    ) -> tuple[web.SockSite, int]:
        sock = listen_socket(settings.bind_host, settings.bind_port)
        try:
            assert self._guard is not None
            site = GuardedSite(runner, sock, self._guard)
            await site.start()
        except BaseException:
            sock.close()
            raise
        return site, int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and end live streams with an ``error`` frame (the app's
        on_shutdown hook). Awaits both.

        Never raises for a server that is not running.
        """
        if self._app is None or self._runner is None:
            return
        runner = self._runner
        self._app = self._runner = self._site = None  # a second stop returns at once
        await runner.cleanup()
        log.info("API stopped")

    async def rebind(self, settings: ApiSettings) -> None:
        """Apply ``settings`` without restarting the process; awaits the new listener.

        A new port is bound first and the old listener closed after. On the same
        port with another address (``127.0.0.1:P`` -> ``0.0.0.0:P``, which Linux
        refuses while the old one listens) the old listener is closed first and
        bound again if the new address fails. On failure (UnsafeBind, OSError)
        the old address keeps serving with the old settings. Open connections
        and live streams are kept.
        """
        check_bind(settings)
        if self._app is None or self._runner is None:
            self._settings, self._port = settings, settings.bind_port
            return
        old, old_settings = self._site, self._settings
        address = (settings.bind_host, settings.bind_port)
        if old is None or address != (old_settings.bind_host, self._port):
            if old is not None and settings.bind_port == self._port:
                await self._swap_same_port(old, old_settings, settings)
            else:
                self._site, self._port = await self._open_site(self._runner, settings)
                if old is not None:
                    await old.stop()
            moved = True
        else:
            moved = False
        self._app[SETTINGS].replace(settings)
        self._settings = settings
        if moved:
            log.info("API now listening on %s", self.url, extra={"fields": {"url": self.url}})

    async def _swap_same_port(
        self, old: web.SockSite, old_settings: ApiSettings, settings: ApiSettings
    ) -> None:
        """Close ``old``, then listen on ``settings``; on failure listen on the old address."""
        assert self._runner is not None
        back = dataclasses.replace(old_settings, bind_port=self._port)
        await old.stop()
        try:
            self._site, self._port = await self._open_site(self._runner, settings)
        except BaseException:
            self._site, self._port = await self._open_site(self._runner, back)
            raise
