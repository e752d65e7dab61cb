"""One sentence for a load failure, taken from llama.cpp's own output."""

from __future__ import annotations

import pytest

from app.engine_host.llamacpp_launch import load_failure_reason
from app.engine_host.load_errors import summarize_load_output

CASES = [
    (
        "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 8192.00 MiB on device 0: "
        "cudaMalloc failed: out of memory\nllama_model_load: error loading model",
        "out of GPU memory: llama.cpp needed another 8,192 MiB on GPU 0 and could not get it; "
        "lower gpu_layers, ctx or slots, or choose a smaller (more quantized) model file",
    ),
    (
        "alloc_tensor_range: failed to allocate CPU buffer of size 17179869184",
        "out of host memory: a 16,384 MiB buffer could not be allocated; lower gpu_layers",
    ),
    (
        "llama_model_load: error loading model: error loading model architecture: "
        "unknown model architecture: 'mamba9'",
        "llama.cpp does not support the model architecture 'mamba9'; choose a model",
    ),
    (
        "gguf_init_from_file_impl: invalid magic characters: 'PK\\x03\\x04', expected 'GGUF'",
        "the model file is not a GGUF file; choose a .gguf model",
    ),
    (
        "gguf_init_from_file: failed to open GGUF file '/home/u/m.gguf' "
        "(No such file or directory)",
        "the model file could not be opened (missing or unreadable)",
    ),
    (
        "llama_model_load: error loading model: key not found in model: llama.context_length",
        "the model file lacks llama.context_length, which llama.cpp needs",
    ),
    ("terminate called after throwing an instance of 'std::bad_alloc'", "out of host memory"),
]


@pytest.mark.parametrize(("tail", "start"), CASES)
def test_engine_output_becomes_one_plain_sentence(tail: str, start: str) -> None:
    sentence = load_failure_reason(134, "srv  load_model: loading /opt/x/m.gguf\n" + tail)
    assert sentence.startswith(start)
    assert "/" not in sentence.replace("/v", "")  # no paths
    assert "\n" not in sentence


def test_unrecognised_output_falls_back_to_the_exit() -> None:
    assert summarize_load_output("something else went wrong") is None
    assert "exited with code 1" in load_failure_reason(1, "something else went wrong")
