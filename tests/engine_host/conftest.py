"""Fixtures for the engine-host tests: the generated model, log folders, local HTTP servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from app.engine_host.demo_model import write_demo_model


@pytest.fixture(scope="session")
def demo_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated demo GGUF model, written once per test session."""
    return write_demo_model(tmp_path_factory.mktemp("models") / "demo.gguf")


@pytest.fixture
def engine_log_dir(tmp_path: Path) -> Path:
    """An empty folder for engine logs."""
    folder = tmp_path / "logs"
    folder.mkdir()
    return folder


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free loopback port; yield its base URL (no trailing slash).

    Handlers are cancelled when their client disconnects, as real engines notice.
    """
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
