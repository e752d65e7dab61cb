"""A llama.cpp pool's VRAM estimate (from its GGUF header, ctx, slots and KV type)
before it loads, the remaining need once loaded, and the reload that refuses a model
its GPU has no room for, on a fake NVML of two GPUs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from app.engine_host.gguf_info import read_gguf
from app.engine_host.llamacpp import LlamaCppEngine, LlamaCppSpec
from app.engine_host.nvml import NvmlInventory
from app.orchestrator.contracts import TaskRequest
from app.orchestrator.errors import OrchError
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.service import Orchestrator, OrchestratorConfig
from app.orchestrator.vram import estimate_vram, gib
from tests.engine_host.fake_nvml import GIB, MIB, FakeNvml, rtx3090, rtx4060ti
from tests.engine_host.test_vram_placement import Probe

READY_TIMEOUT_S = 60.0


def gpu_spec(model: Path, **kwargs: object) -> LlamaCppSpec:
    # GPU 0 by mask; no layers offloaded, so the real engine runs on this CPU
    return LlamaCppSpec(
        pool_id="gpu0", model_ref=f"file:{model}", ctx=512, device_mask="0", demo=True,
        gpu_layers=0, startup_timeout_s=READY_TIMEOUT_S, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def test_estimate_before_loading_uses_gguf_ctx_slots_and_kv_type(
    demo_model_path: Path, engine_log_dir: Path
) -> None:
    shape = read_gguf(demo_model_path).shape()
    assert shape is not None
    f16 = LlamaCppEngine(gpu_spec(demo_model_path, slots=2), log_dir=engine_log_dir)
    q8 = LlamaCppEngine(
        gpu_spec(demo_model_path, slots=2, cache_type_k="q8_0", cache_type_v="q8_0"),
        log_dir=engine_log_dir,
    )
    expected = estimate_vram(shape, 512, 2).total_bytes
    assert f16.status.state is not PoolState.READY
    assert f16.descriptor.vram_estimate_bytes == expected > 0
    q8_expected = estimate_vram(shape, 512, 2, bytes_per_element=34 / 32).total_bytes
    assert q8.descriptor.vram_estimate_bytes == q8_expected < expected


@pytest_asyncio.fixture
async def served(
    demo_model_path: Path, engine_log_dir: Path
) -> AsyncIterator[tuple[Orchestrator, LlamaCppEngine, FakeNvml]]:
    nvml = FakeNvml([rtx3090(), rtx4060ti()])
    pids: list[int] = []
    engine = LlamaCppEngine(
        gpu_spec(demo_model_path),
        log_dir=engine_log_dir,
        gpu_snapshot=NvmlInventory(nvml).read,
    )
    probe = Probe(NvmlInventory(nvml, engine_pids=lambda: pids))
    orch = Orchestrator([engine], OrchestratorConfig(), gpu_probe=probe)
    await orch.start()
    await engine.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=READY_TIMEOUT_S)
    assert engine.status.state is PoolState.READY, engine.status.detail
    assert engine.engine_pid is not None
    pids.append(engine.engine_pid)
    try:
        yield orch, engine, nvml
    finally:
        await orch.shutdown(deadline_s=0)


@pytest.mark.engine
async def test_a_loaded_pool_needs_only_what_it_does_not_hold_yet(
    served: tuple[Orchestrator, LlamaCppEngine, FakeNvml],
) -> None:
    orch, engine, nvml = served
    estimate = engine.descriptor.vram_estimate_bytes
    assert estimate > 0
    # GPU 0 has less free than the whole estimate, but the engine already holds it
    held = [(engine.engine_pid or 0, estimate)]
    nvml.gpus[0] = rtx3090(used=24 * GIB - 100 * MIB, processes=held)
    await asyncio.sleep(0.05)
    assert orch.submit(TaskRequest(prompt="hi", max_tokens=2)).pool_id == "gpu0"
    # the same free memory held by someone else: the pool needs its whole estimate
    nvml.gpus[0] = rtx3090(used=24 * GIB - 100 * MIB)
    await asyncio.sleep(0.05)
    with pytest.raises(OrchError):
        orch.submit(TaskRequest(prompt="hi", max_tokens=2))
    (note,) = orch.recent_decisions(1)[0].candidates
    assert note.filter == "vram"


@pytest.mark.engine
async def test_reload_refuses_a_model_that_does_not_fit_and_the_old_keeps_serving(
    served: tuple[Orchestrator, LlamaCppEngine, FakeNvml], demo_model_path: Path, tmp_path: Path
) -> None:
    orch, engine, nvml = served
    bigger = tmp_path / "bigger.gguf"
    await asyncio.to_thread(bigger.write_bytes, await asyncio.to_thread(demo_model_path.read_bytes))
    nvml.gpus[0] = rtx3090(used=24 * GIB - 100 * MIB)
    pid = engine.engine_pid
    need = gib(engine.descriptor.vram_estimate_bytes)

    result = await orch.reload("gpu0", f"file:{bigger}")

    assert not result.ok
    assert result.message == (
        f"bigger needs {need} GiB of VRAM but GPU 0 has 0.1 GiB free; choose a smaller "
        "model or lower the pool's ctx or slots; still serving demo"
    )
    assert engine.descriptor.model == "demo"
    assert engine.status.state is PoolState.READY
    assert engine.engine_pid == pid
    # with room on the GPU the same reload goes through
    nvml.gpus[0] = rtx3090()
    assert (await orch.reload("gpu0", f"file:{bigger}")).ok
    assert engine.descriptor.model == "bigger"
