"""One plain sentence for why llama.cpp could not load a model, from its own output.

``summarize_load_output`` reads the engine's log tail and recognises the
failures users meet: out of memory (with the numbers), a file that is not a
GGUF model, an architecture llama.cpp does not know, a missing file, a file
that lacks a required key. It never returns paths or raw engine lines. Pure.
"""

from __future__ import annotations

import re

_MIB = 1024 * 1024
_CUDA_OOM = re.compile(r"allocating ([\d.]+) MiB on device (\d+): cudaMalloc failed: out of memory")
_BUFFER_OOM = re.compile(r"failed to allocate (\S+) buffer of size (\d+)")
_ARCH = re.compile(r"unknown model architecture: '([^']{1,64})'")
_KEY = re.compile(r"key not found in model: ([\w.]{1,80})")
_MAGIC = re.compile(r"invalid magic|failed to read magic|not a gguf", re.IGNORECASE)
_MISSING = re.compile(r"failed to open .*(No such file|not found)", re.IGNORECASE)
_HOST_OOM = re.compile(r"std::bad_alloc|cannot allocate memory", re.IGNORECASE)
_SMALLER = "lower gpu_layers, ctx or slots, or choose a smaller (more quantized) model file"


def summarize_load_output(tail: str) -> str | None:
    """Return one sentence naming why the model did not load, or None when unrecognised."""
    if match := _CUDA_OOM.search(tail):
        mib, device = float(match.group(1)), match.group(2)
        return (
            f"out of GPU memory: llama.cpp needed another {mib:,.0f} MiB on GPU {device} "
            f"and could not get it; {_SMALLER}"
        )
    if match := _BUFFER_OOM.search(tail):
        where, size = match.group(1), int(match.group(2)) / _MIB
        memory = "host memory" if where.upper().startswith("CPU") else f"{where} memory"
        return f"out of {memory}: a {size:,.0f} MiB buffer could not be allocated; {_SMALLER}"
    if _HOST_OOM.search(tail):
        return f"out of host memory while loading; {_SMALLER}"
    if match := _ARCH.search(tail):
        return (
            f"llama.cpp does not support the model architecture {match.group(1)!r}; "
            "choose a model of a supported architecture or update the engine"
        )
    if _MAGIC.search(tail):
        return "the model file is not a GGUF file; choose a .gguf model"
    if _MISSING.search(tail):
        return "the model file could not be opened (missing or unreadable); check the pool's model"
    if match := _KEY.search(tail):
        return (
            f"the model file lacks {match.group(1)}, which llama.cpp needs; "
            "it may be incomplete or made for another program"
        )
    return None
