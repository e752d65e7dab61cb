"""[models] auto_fetch: a pool's missing hf: model is downloaded at start and loaded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from app.config import parse_settings
from app.engine_host.catalog import Catalog
from app.engine_host.downloads import Downloader
from app.engine_host.mock import MockSpec
from app.engine_host.model_store import ModelStore
from app.models_wiring import auto_fetch
from tests.api.conftest import started_orch
from tests.support.fake_hub import FakeHub

REPO = "llama-orch/demo-GGUF"
FILE = "demo.Q8_0.gguf"


@pytest_asyncio.fixture
async def hub(demo_gguf: bytes) -> AsyncIterator[FakeHub]:
    fake = FakeHub({REPO: {FILE: demo_gguf}})
    await fake.start()
    yield fake
    await fake.stop()


async def test_missing_pool_model_is_fetched_and_loaded(hub: FakeHub, tmp_path: Path) -> None:
    settings = parse_settings(
        {"models": {"auto_fetch": True}, "pools": [{"id": "gpu0", "model": f"hf:{REPO}/{FILE}"}]},
        env={},
    )
    orch, _ = await started_orch((MockSpec("gpu0", tokens_per_s=0),))
    store = ModelStore(
        Catalog(tmp_path / "data"), tmp_path / "models", Downloader({"HF_ENDPOINT": hub.url})
    )
    try:
        await auto_fetch(settings, store, orch)
        view = orch.pool_view("gpu0")
    finally:
        await orch.shutdown(deadline_s=0)

    assert (tmp_path / "models" / FILE).is_file()
    assert [m.source_url for m in await store.list_models()] == [f"hf:{REPO}/{FILE}"]
    assert view.model == str((tmp_path / "models" / FILE).resolve())
