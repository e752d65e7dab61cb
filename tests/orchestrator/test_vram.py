"""The VRAM estimate: weights + KV cache per slot + margin, and the fit sentence."""

from __future__ import annotations

from pathlib import Path

from app.engine_host import demo_model
from app.engine_host.gguf_info import read_gguf
from app.orchestrator.vram import (
    COMPUTE_MARGIN_BYTES,
    GIB,
    ModelShape,
    estimate_vram,
    fit_on,
)


def test_demo_model_estimate_matches_a_hand_calculation(tmp_path: Path, demo_gguf: bytes) -> None:
    path = tmp_path / "demo.gguf"
    path.write_bytes(demo_gguf)
    shape = read_gguf(path).shape()
    assert shape is not None

    est = estimate_vram(shape, ctx=2048, slots=2)

    # 2 layers x 2048 tokens x 4 KV heads x 16 head dim x 2 (K, V) x 2 bytes (f16), 2 slots
    assert est.kv_bytes == 2 * (2 * 2048 * 4 * 16 * 2 * 2) == 2_097_152
    assert est.weights_bytes == len(demo_gguf) - 13376 == 588_544  # tensor data, no header
    assert est.total_bytes == 588_544 + 2_097_152 + COMPUTE_MARGIN_BYTES
    assert demo_model.N_EMBD // demo_model.N_HEAD == shape.head_dim == 16


def test_fit_sentence_names_the_numbers() -> None:
    shape = ModelShape(weights_bytes=int(4.5 * GIB), layers=32, kv_heads=8, head_dim=128)
    need = estimate_vram(shape, ctx=8192, slots=1).total_bytes  # 4.5 + 1.0 KV + 0.5

    assert fit_on("GPU 0", need, int(23.6 * GIB)).text == (
        "fits on GPU 0 (needs 6.0 of 23.6 GiB free)"
    )
    verdict = fit_on("GPU 1", need, int(5.2 * GIB))
    assert not verdict.fits
    assert verdict.text == "does not fit on GPU 1 (needs 6.0 of 5.2 GiB free)"
    assert fit_on("GPU 2", need, None).fits
