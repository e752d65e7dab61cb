"""The catalog says, per GPU of a fake NVML, whether a model fits before it is loaded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.engine_host.catalog import Catalog
from app.engine_host.downloads import Downloader
from app.engine_host.gguf_info import read_gguf
from app.engine_host.mock import MockEngine, MockSpec
from app.engine_host.model_store import ModelStore
from app.engine_host.nvml import NvmlInventory
from app.orchestrator.service import Orchestrator, OrchestratorConfig
from app.orchestrator.vram import COMPUTE_MARGIN_BYTES, estimate_vram, gib
from tests.engine_host.fake_nvml import GIB, MIB, FakeNvml, rtx3090, rtx4060ti
from tests.engine_host.test_vram_placement import Probe


async def test_fit_per_gpu_names_needed_and_free(tmp_path: Path, demo_gguf: bytes) -> None:
    model = tmp_path / "demo.gguf"
    model.write_bytes(demo_gguf)
    info = read_gguf(model)
    nvml = FakeNvml([rtx3090(used=2 * GIB), rtx4060ti(total=16 * GIB, used=16 * GIB - 300 * MIB)])
    orch = Orchestrator(
        [MockEngine(MockSpec("m0", tokens_per_s=0))], OrchestratorConfig(),
        gpu_probe=Probe(NvmlInventory(nvml)),
    )  # fmt: skip
    await orch.start()
    await asyncio.sleep(0.01)
    store = ModelStore(Catalog(tmp_path / "data"), tmp_path, Downloader({}), orch=orch)
    try:
        record = store.catalog.add(str(model), info, "00", downloaded=False)
        fits = store.view(record).fits
    finally:
        await orch.shutdown(deadline_s=0)

    shape = info.shape()
    assert shape is not None
    need = estimate_vram(shape, ctx=4096, slots=1).total_bytes  # the trained ctx, one slot
    assert need == info.tensor_bytes + 2 * 4096 * 4 * 16 * 2 * 2 + COMPUTE_MARGIN_BYTES
    assert fits == [
        f"fits on GPU 0 (needs {gib(need)} of 22.0 GiB free)",
        f"does not fit on GPU 1 (needs {gib(need)} of 0.3 GiB free)",
    ]
