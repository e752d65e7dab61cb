"""A llama.cpp pool's VRAM: its model's estimate (from the GGUF header) and the
reload check that refuses a model its GPUs have no room for."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from app.engine_host.gguf_info import GgufError, read_gguf
from app.engine_host.llamacpp_launch import LlamaCppSpec, model_id_for, resolve_model_ref
from app.orchestrator.pools import pool_vram
from app.orchestrator.ports import GpuInventory
from app.orchestrator.vram import estimate_vram, fit_on, gib

GpuSnapshot = Callable[[], GpuInventory]
"""NVML's view of the GPUs now (blocking)."""

KV_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32,
    "q5_0": 22 / 32, "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32,
}  # fmt: skip
"""Bytes per KV cache element of llama-server's -ctk/-ctv types (blocks of 32)."""


def kv_bytes_per_element(spec: LlamaCppSpec) -> float:
    """Return the mean bytes per K and V element of ``spec``'s cache types (f16 if unknown)."""
    k = KV_TYPE_BYTES.get(spec.cache_type_k, 2.0)
    v = KV_TYPE_BYTES.get(spec.cache_type_v, 2.0)
    return (k + v) / 2


def vram_estimate_bytes(spec: LlamaCppSpec, model_ref: str | None) -> int:
    """Return the VRAM ``model_ref`` needs served with ``spec``'s ctx, slots and KV types.

    0 when unknown: no model, a CPU pool, or a file that is not a readable GGUF
    with the numbers. BLOCKING (reads the model's header once per file version).
    """
    if not model_ref or spec.device_mask == "cpu":
        return 0
    try:
        path = resolve_model_ref(model_ref)
        mtime = path.stat().st_mtime_ns
    except (ValueError, OSError):
        return 0
    per_element = kv_bytes_per_element(spec)
    return _estimate(str(path), mtime, spec.ctx, spec.slots, per_element)


@lru_cache(maxsize=64)
def _estimate(path: str, _mtime: int, ctx: int, slots: int, per_element: float) -> int:
    try:
        shape = read_gguf(Path(path)).shape()
    except GgufError:
        return 0
    if shape is None:
        return 0
    return estimate_vram(shape, ctx, slots, bytes_per_element=per_element).total_bytes


def reload_misfit(spec: LlamaCppSpec, model_ref: str, gpus: GpuInventory) -> str | None:
    """Return the sentence refusing ``model_ref`` when its estimate exceeds the free VRAM
    of ``spec``'s GPUs (beside the model now serving), else None. BLOCKING (see above)."""
    need = vram_estimate_bytes(spec, model_ref)
    _total, free = pool_vram(spec.device_mask, gpus)
    if need <= 0 or fit_on(f"GPU {spec.device_mask}", need, free).fits:
        return None
    assert free is not None
    return (
        f"{model_id_for(model_ref)} needs {gib(need)} GiB of VRAM but GPU {spec.device_mask} "
        f"has {gib(free)} GiB free; choose a smaller model or lower the pool's ctx or slots"
    )
