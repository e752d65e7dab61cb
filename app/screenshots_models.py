"""The Models view screenshot: a local hub serving the demo model, paced, so the
grab shows a download in progress (bytes, rate, ETA) beside the local models."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from app.local_hub import FakeHub

MODELS_TAB = 5
HUB_REPO = "llama-orch/demo-GGUF"


async def start_hub(settings: Any) -> tuple[FakeHub, Path]:
    """Start a paced local hub serving the demo pool's model under two file names and
    point the catalog at it (HF_ENDPOINT). Returns the hub and the demo model's path."""
    demo_model = next(settings.model_path(p) for p in settings.pools if p.demo)
    data = await asyncio.to_thread(demo_model.read_bytes)
    files = {"demo.Q8_0.gguf": data, "demo.Q4_K_M.gguf": data}
    hub = FakeHub({HUB_REPO: files}, chunk_size=8 * 1024, chunk_delay_s=0.25)
    os.environ["HF_ENDPOINT"] = await hub.start()
    return hub, demo_model


async def grab_models(window: Any, demo_model: Path, out: Path) -> Path:
    """Show the demo model as a local model, search the hub, start a download,
    grab once its rate is known, then cancel it. Returns the PNG's path."""
    view = window.models_view
    await view._bridge.models.get(str(demo_model))
    window.tabs.setCurrentIndex(MODELS_TAB)
    await _until(lambda: view.table.rowCount() > 0)
    view.query.setText("demo")
    view.search()
    await _until(lambda: view.results.topLevelItemCount() > 0)
    repo = view.results.topLevelItem(0)
    view.results.setCurrentItem(repo.child(repo.childCount() - 1))
    view.download_selected()
    await _until(lambda: any("/s · ETA" in r.info.text() and "…" not in r.info.text()
                             for r in view.rows.values()), 60.0)  # fmt: skip
    await asyncio.sleep(0.3)
    path = out / "models.png"
    window.grab().save(str(path))
    for row in view.rows.values():
        view.cancel(row.download_id)
    await asyncio.sleep(0.5)
    return path


async def _until(pred: Any, limit_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while not pred():
        if loop.time() > end:
            raise TimeoutError("the Models view did not get there in time")
        await asyncio.sleep(0.05)
