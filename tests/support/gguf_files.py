"""Broken and odd GGUF files for the model checks, made from the demo model's bytes."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np


def not_gguf(folder: Path, name: str = "notes.gguf") -> Path:
    """Write a text file with a .gguf name."""
    path = folder / name
    path.write_text("shopping list: eggs, milk\n")
    return path


def truncated(folder: Path, demo: bytes, name: str = "cut.gguf") -> Path:
    """Write the demo model cut off in its tensor data (a dropped download)."""
    path = folder / name
    path.write_bytes(demo[: len(demo) // 2])
    return path


def absurd(folder: Path, demo: bytes, name: str = "absurd.gguf") -> Path:
    """Write the demo model with a header claiming 10^12 tensors."""
    data = bytearray(demo)
    data[8:16] = struct.pack("<Q", 10**12)
    path = folder / name
    path.write_bytes(bytes(data))
    return path


def with_tensors(folder: Path, name: str, arch: str) -> Path:
    """Write a well-formed GGUF of architecture ``arch`` with one small tensor
    (an engine cannot load it as a model: its tensors are missing)."""
    path = folder / name
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("lonely.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


BAD_KINDS = ("not_gguf", "truncated", "absurd", "unknown_arch")
"""The refused kinds of model file, each with the sentence that refuses it (below)."""


def write_bad(kind: str, folder: Path, demo: bytes) -> tuple[Path, str]:
    """Write a model file of ``kind`` into ``folder``; return it and the start of
    the sentence every check refuses it with."""
    if kind == "not_gguf":
        return not_gguf(folder), "notes.gguf is not a GGUF model file"
    if kind == "truncated":
        return truncated(folder, demo), "cut.gguf is truncated: its tensor data needs"
    if kind == "absurd":
        return absurd(folder, demo), "absurd.gguf is damaged: its header claims"
    return with_tensors(folder, "odd.gguf", "zorblax"), "odd.gguf is a 'zorblax' model"
