"""Placement's VRAM filter on a fake NVML of two GPUs: the GPU without room is
filtered out, and the decision names the numbers."""

from __future__ import annotations

import asyncio

from app.engine_host.mock import MockEngine, MockSpec
from app.engine_host.nvml import NvmlInventory
from app.orchestrator.contracts import TaskRequest
from app.orchestrator.ports import GpuInventory
from app.orchestrator.service import Orchestrator, OrchestratorConfig
from tests.engine_host.fake_nvml import GIB, FakeNvml, rtx3090, rtx4060ti


class Probe:
    def __init__(self, inventory: NvmlInventory) -> None:
        self._inventory = inventory

    def snapshot(self) -> GpuInventory:
        return self._inventory.read()


async def test_pool_on_the_gpu_without_room_is_filtered_and_says_why() -> None:
    nvml = FakeNvml([rtx3090(used=2 * GIB), rtx4060ti(used=int(8.2 * GIB))])  # 22.0 / 7.8 free
    need = int(9.4 * GIB)
    engines = [
        MockEngine(MockSpec("gpu0", device_mask="0", tokens_per_s=0, vram_estimate_bytes=need)),
        MockEngine(MockSpec("gpu1", device_mask="1", tokens_per_s=0, vram_estimate_bytes=need)),
    ]
    orch = Orchestrator(engines, OrchestratorConfig(), gpu_probe=Probe(NvmlInventory(nvml)))
    await orch.start()
    await asyncio.sleep(0.01)
    try:
        placed = [orch.submit(TaskRequest(prompt="hi", max_tokens=2)) for _ in range(2)]
        decision = orch.recent_decisions(1)[0]
    finally:
        await orch.shutdown(deadline_s=0)

    assert {a.pool_id for a in placed} == {"gpu0"}
    (gpu1,) = [c for c in decision.candidates if c.pool_id == "gpu1"]
    assert gpu1.filter == "vram"
    assert gpu1.reason == "needs 9.4 GiB, 7.8 GiB free"
    assert (gpu1.vram_need_bytes, gpu1.vram_free_bytes) == (need, 16 * GIB - int(8.2 * GIB))
    assert "gpu1 skipped: needs 9.4 GiB, 7.8 GiB free" in decision.summary


async def test_an_engine_holding_its_memory_needs_no_more() -> None:
    need = int(9.4 * GIB)
    engine = MockEngine(MockSpec("gpu1", device_mask="1", tokens_per_s=0, vram_estimate_bytes=need))
    engine.engine_pid = 4242  # type: ignore[attr-defined]
    nvml = FakeNvml([rtx3090(), rtx4060ti(used=int(14 * GIB), processes=[(4242, need)])])
    orch = Orchestrator(
        [engine],
        OrchestratorConfig(),
        gpu_probe=Probe(NvmlInventory(nvml, engine_pids=lambda: [4242])),
    )
    await orch.start()
    await asyncio.sleep(0.01)
    try:
        assert orch.submit(TaskRequest(prompt="hi", max_tokens=2)).pool_id == "gpu1"
    finally:
        await orch.shutdown(deadline_s=0)
