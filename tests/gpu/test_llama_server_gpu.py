"""llama-server on a real NVIDIA GPU (``gpu``-marked; skipped without one): the
CUDA build, a pool on GPU 0 with every layer offloaded, its VRAM per process in
NVML, and four parallel streams against one (aggregate tokens/s, printed)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from app.engine_host.llamacpp import LlamaCppEngine, LlamaCppSpec
from app.engine_host.llamacpp_launch import installed_llama_server
from app.engine_host.nvml import NvmlInventory, PynvmlBackend
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.ports import EngineRequest

pytestmark = [pytest.mark.gpu, pytest.mark.engine]
shared_loop = pytest.mark.asyncio(loop_scope="module")
TOKENS = 1500


def test_llama_server_is_a_cuda_build(cuda_build: dict[str, str]) -> None:
    binary = installed_llama_server()
    assert binary is not None
    out = subprocess.run(
        [binary, "--list-devices"], capture_output=True, text=True, timeout=60, check=False
    )
    assert "CUDA0" in out.stdout + out.stderr, out.stdout + out.stderr


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gpu_pool(
    cuda_build: dict[str, str], demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LlamaCppEngine]:
    spec = LlamaCppSpec("gpu0", f"file:{demo_model_path}", device_mask="0", slots=4, ctx=2048)
    pool = LlamaCppEngine(spec, log_dir=tmp_path_factory.mktemp("logs"))
    await pool.start()
    await pool.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=300)
    yield pool
    await pool.stop()


@shared_loop
async def test_pool_on_gpu_0_is_ready_with_all_layers_offloaded(gpu_pool: LlamaCppEngine) -> None:
    assert gpu_pool.status.state is PoolState.READY, gpu_pool.status.detail
    log = gpu_pool.log_path.read_text(errors="replace")
    assert "-ngl all" in log
    match = re.search(r"offloaded (\d+)/(\d+) layers to GPU", log)
    assert match and match.group(1) == match.group(2), log[-3000:]


@shared_loop
async def test_its_vram_is_visible_per_process_in_nvml(gpu_pool: LlamaCppEngine) -> None:
    pid = gpu_pool.engine_pid
    assert pid is not None
    reader = NvmlInventory(PynvmlBackend(), engine_pids=lambda: {pid})
    try:
        inv = await asyncio.to_thread(reader.read)
    finally:
        reader.close()
    used = [b for gpu in inv.gpus for p, b in gpu.process_vram_bytes if p == pid]
    assert used and used[0] is not None and used[0] > 0, "the engine's VRAM should show in NVML"
    print(f"llama-server pid {pid} holds {used[0] / 2**20:.0f} MiB on GPU 0")


async def _stream(pool: LlamaCppEngine, seed: int) -> list[float]:
    stream = await pool.open_stream(
        EngineRequest(prompt="Hello", messages=None, max_tokens=TOKENS, temperature=0.8, seed=seed)
    )
    return [time.monotonic() async for _ in stream]


@shared_loop
async def test_four_parallel_streams_against_one(gpu_pool: LlamaCppEngine) -> None:
    started = time.monotonic()
    one = await _stream(gpu_pool, 1)
    single_tps = len(one) / (time.monotonic() - started)
    started = time.monotonic()
    four = await asyncio.gather(*(_stream(gpu_pool, s) for s in range(4)))
    aggregate_tps = sum(len(t) for t in four) / (time.monotonic() - started)
    assert max(t[0] for t in four) < min(t[-1] for t in four)  # all four decoded at once
    print(
        f"GPU 0: 1 stream {single_tps:,.0f} tokens/s, 4 parallel {aggregate_tps:,.0f} tokens/s "
        f"aggregate (x{aggregate_tps / single_tps:.2f})"
    )
