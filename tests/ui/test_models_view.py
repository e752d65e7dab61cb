"""The Models view against the fake hub and a real catalog: search, a download whose
progress moves, cancel, download again, use on a pool; the config file after a
restart names the chosen model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import load_settings
from app.config.model_edit import add_pool, set_pool_model
from app.engine_host.catalog import Catalog
from app.engine_host.downloads import Downloader
from app.engine_host.mock import MockSpec
from app.engine_host.model_store import ModelStore
from app.ui.models_client import EmbeddedModels
from app.ui.models_view import ModelsView, progress_text
from tests.api.conftest import started_orch
from tests.support.fake_hub import FakeHub
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge

REPO = "llama-orch/demo-GGUF"
FILE = "demo.Q8_0.gguf"
REF = f"hf:{REPO}/{FILE}"
CONFIG = '[[pools]]\nid = "gpu0"  # the card\nengine = "mock"\nmodel = "old"\n'


@pytest.fixture
def setup(qloop: QtAsync, tmp_path: Path, demo_gguf: bytes) -> Iterator[dict[str, Any]]:
    hub = FakeHub({REPO: {FILE: demo_gguf}}, chunk_size=8 * 1024, chunk_delay_s=0.05)
    qloop.run(hub.start())
    orch, _ = qloop.run(started_orch((MockSpec("gpu0", tokens_per_s=0),)))
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)

    async def remember(pool_id: str, ref: str) -> None:
        await asyncio.to_thread(set_pool_model, config, pool_id, ref, {})

    async def new_pool(pool_id: str, ref: str, mask: str) -> None:
        await asyncio.to_thread(add_pool, config, pool_id, ref, mask, {})

    store = ModelStore(
        Catalog(tmp_path / "data"), tmp_path / "models", Downloader({"HF_ENDPOINT": hub.url}),
        orch=orch, remember=remember, add_pool=new_pool,
    )  # fmt: skip
    bridge = FakeBridge()
    bridge.models = EmbeddedModels(store, orch, lambda coro: coro)
    yield {"hub": hub, "store": store, "bridge": bridge, "config": config}
    qloop.run(store.close())
    qloop.run(orch.shutdown(deadline_s=0))
    qloop.run(hub.stop())


def cell(view: ModelsView, row: int, col: int) -> str:
    item = view.table.item(row, col)
    return item.text() if item is not None else ""


def test_search_download_cancel_and_use_on_pool(
    qtbot: Any, qloop: QtAsync, setup: dict[str, Any], tmp_path: Path
) -> None:
    hub, store, bridge = setup["hub"], setup["store"], setup["bridge"]
    view = ModelsView(bridge, choose_pool=lambda _parent, pools: pools[0])
    qtbot.addWidget(view)

    view.query.setText("demo")
    view.search()
    qloop.wait_until(lambda: view.results.topLevelItemCount() == 1)
    repo = view.results.topLevelItem(0)
    assert repo is not None
    file_item = repo.child(0)
    assert file_item is not None
    assert (repo.text(0), file_item.text(0), file_item.text(1)) == (REPO, FILE, "Q8_0")

    view.results.setCurrentItem(file_item)
    view.download_selected()
    qloop.wait_until(lambda: bool(view.rows))
    row = next(iter(view.rows.values()))
    assert row.bar.value() == 0 and row.state == "running"
    qloop.wait_until(lambda: row.bar.value() > 0, 10)  # the poll timer moves the bar
    assert row.state == "running"
    assert " of 588 KiB · " in row.info.text() and "ETA" in row.info.text()
    view.cancel(row.download_id)
    qloop.wait_until(lambda: row.state != "running", 10)
    assert row.info.text() == "canceled"
    assert qloop.run(store.list_models()) == []
    models = tmp_path / "models"
    assert not models.exists() or list(models.iterdir()) == []

    hub.chunk_delay_s = 0.0
    view.download_selected()
    qloop.wait_until(lambda: view.table.rowCount() == 1, 15)
    assert cell(view, 0, 0) == "demo.Q8_0"
    assert cell(view, 0, 1) == "F32"  # what the file says, not its name

    view.table.selectRow(0)
    view.use_selected()
    qloop.wait_until(lambda: "old" not in setup["config"].read_text(), 10)
    restarted = load_settings(setup["config"], {})
    assert restarted.pools[0].model == REF
    assert "# the card" in setup["config"].read_text()
    qloop.wait_until(lambda: cell(view, 0, 5) == "gpu0", 5)

    view.new_pool_for_selected()  # the chooser picks "GPU 0"
    qloop.wait_until(lambda: view.status.text().startswith("added pool gpu0-demo.Q8_0"), 5)
    added = load_settings(setup["config"], {}).pools[-1]
    assert (added.id, added.model, added.device_mask) == ("gpu0-demo.Q8_0", REF, "0")


def test_progress_text_names_bytes_rate_and_eta() -> None:
    from app.orchestrator.catalog_port import Download

    d = Download(id="dl-1", ref=REF, state="running", bytes_done=3 * 2**20,
                 bytes_total=12 * 2**20, rate_bytes_per_s=1.5 * 2**20, eta_s=6.0)  # fmt: skip
    assert progress_text(d) == "3.0 MiB of 12.0 MiB · 1.5 MiB/s · ETA 6 s"
