"""VRAM estimate of one model on one pool, and whether it fits a GPU. Pure.

needs = weights (the tensors' bytes)
      + KV cache: layers x ctx x KV heads x head dim x 2 (K and V) x bytes per element, per slot
      + a compute margin (scratch buffers, CUDA context).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
KV_BYTES_PER_ELEMENT = 2
"""f16 KV cache, llama.cpp's default."""
COMPUTE_MARGIN_BYTES = 512 * 1024**2
"""Scratch buffers and the CUDA context, a fixed allowance per engine."""


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The numbers of a model that size its VRAM (from the GGUF metadata)."""

    weights_bytes: int
    layers: int
    kv_heads: int
    head_dim: int


@dataclass(frozen=True, slots=True)
class VramEstimate:
    """The parts of an estimate in bytes; ``total_bytes`` is what must be free."""

    weights_bytes: int
    kv_bytes: int
    margin_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.margin_bytes


def kv_bytes_per_slot(shape: ModelShape, ctx: int, bytes_per_element: float) -> int:
    """Return the KV cache bytes of one slot holding ``ctx`` tokens (quantised KV
    types have fractional bytes per element)."""
    return int(shape.layers * ctx * shape.kv_heads * shape.head_dim * 2 * bytes_per_element)


def estimate_vram(
    shape: ModelShape,
    ctx: int,
    slots: int,
    *,
    bytes_per_element: float = KV_BYTES_PER_ELEMENT,
    margin_bytes: int = COMPUTE_MARGIN_BYTES,
) -> VramEstimate:
    """Return the VRAM needed to serve ``shape`` with ``slots`` slots of ``ctx`` tokens."""
    kv = slots * kv_bytes_per_slot(shape, ctx, bytes_per_element)
    return VramEstimate(shape.weights_bytes, kv, margin_bytes)


def gib(n_bytes: int) -> str:
    """Return ``n_bytes`` in GiB with one decimal ("9.4")."""
    return f"{n_bytes / GIB:.1f}"


@dataclass(frozen=True, slots=True)
class Fit:
    """Whether a model fits one GPU, with the sentence the UI and decisions show."""

    gpu: str
    fits: bool
    needs_bytes: int
    free_bytes: int | None

    @property
    def text(self) -> str:
        if self.free_bytes is None:
            return f"{self.gpu}: free VRAM unknown (needs {gib(self.needs_bytes)} GiB)"
        numbers = f"needs {gib(self.needs_bytes)} of {gib(self.free_bytes)} GiB free"
        verdict = "fits on" if self.fits else "does not fit on"
        return f"{verdict} {self.gpu} ({numbers})"


def fit_on(gpu: str, needs_bytes: int, free_bytes: int | None) -> Fit:
    """Return whether ``needs_bytes`` fit in ``free_bytes`` of ``gpu`` (unknown free fits)."""
    fits = free_bytes is None or needs_bytes <= free_bytes
    return Fit(gpu, fits, needs_bytes, free_bytes)
