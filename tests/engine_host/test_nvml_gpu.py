"""The real NVML backend on this machine's GPUs (skipped where NVML finds none)."""

from __future__ import annotations

import pytest

from app.engine_host.gpu_poller import GpuPoller
from app.engine_host.nvml import NvmlInventory, PynvmlBackend, format_inventory
from app.orchestrator.ports import GpuInventory

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def real_inventory() -> GpuInventory:
    reader = NvmlInventory(PynvmlBackend())
    try:
        inv = reader.read()
    finally:
        reader.close()
    if not inv.gpus:
        pytest.skip(f"NVML found no GPU: {inv.hint}")
    return inv


def test_real_inventory_lists_gpus_with_name_and_vram(real_inventory: GpuInventory) -> None:
    assert real_inventory.hint is None
    assert real_inventory.driver_version
    for index, gpu in enumerate(real_inventory.gpus):
        assert gpu.index == index
        assert gpu.name
        assert gpu.uuid is not None
        assert gpu.uuid.startswith(("GPU-", "MIG-"))
        assert gpu.vram_total_bytes is not None
        assert gpu.vram_total_bytes > 0
        assert gpu.vram_free_bytes is not None
        assert 0 <= gpu.vram_free_bytes <= gpu.vram_total_bytes
        assert gpu.compute_capability is not None
    assert str(real_inventory.gpus[0].name) in format_inventory(real_inventory)


def test_real_poller_publishes_the_gpus(real_inventory: GpuInventory) -> None:
    poller = GpuPoller(NvmlInventory(PynvmlBackend()))
    poller.start()
    try:
        assert poller.wait_first(10.0)
    finally:
        assert poller.stop()

    names = [g.name for g in poller.snapshot().gpus]
    assert names == [g.name for g in real_inventory.gpus]
