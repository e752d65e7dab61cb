"""GGUF inspection: the checks a model file passes before anything loads it.

``read_gguf`` reads the header, metadata and tensor table with the ``gguf``
package (memory-mapped; tensor data is never read) and refuses, with one plain
sentence naming the file, anything an engine would choke on: not a GGUF file,
absurd counts in the header, a damaged header, tensor data past the end of the
file (a truncated download), or an architecture the installed engine does not
know. The same check runs in ``check-config``, reload, pool start and the
catalog.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from app.orchestrator.vram import ModelShape

GGUF_MAGIC = b"GGUF"
_HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, kv count
_MIN_TENSOR_INFO = 8 + 1 + 4 + 8 + 4 + 8  # name len, name, n_dims, one dim, type, offset
_MIN_KV = 8 + 1 + 4 + 1  # key len, key, value type, smallest value
_MAX_COUNT = 1_000_000
KNOWN_ARCHITECTURES: frozenset[str] = frozenset(gguf.MODEL_ARCH_NAMES.values())
"""Architectures llama.cpp (the installed engine's ``gguf`` tables) can load."""


class GgufError(ValueError):
    """A model file fails a check; ``str()`` is one plain sentence naming the file."""


@dataclass(frozen=True, slots=True)
class GgufInfo:
    """What a GGUF file says about its model (None where the file is silent)."""

    path: Path
    size_bytes: int
    architecture: str
    name: str | None
    parameter_count: int
    tensor_bytes: int
    file_type: int | None
    quantization: str
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    has_chat_template: bool

    @property
    def head_dim(self) -> int | None:
        """Return the size of one attention head (embedding / heads), None when unknown."""
        if not self.embedding_length or not self.head_count:
            return None
        return self.embedding_length // self.head_count

    def shape(self) -> ModelShape | None:
        """Return the numbers the VRAM estimate needs, None when the file lacks them."""
        kv_heads = self.head_count_kv or self.head_count
        if not self.block_count or not kv_heads or self.head_dim is None:
            return None
        return ModelShape(self.tensor_bytes, self.block_count, kv_heads, self.head_dim)

    def to_json(self) -> dict[str, Any]:
        """Return the metadata as JSON-ready values (the path as a string)."""
        return {
            "architecture": self.architecture,
            "name": self.name,
            "parameter_count": self.parameter_count,
            "tensor_bytes": self.tensor_bytes,
            "file_type": self.file_type,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "block_count": self.block_count,
            "embedding_length": self.embedding_length,
            "head_count": self.head_count,
            "head_count_kv": self.head_count_kv,
            "has_chat_template": self.has_chat_template,
        }


class _TableReader(gguf.GGUFReader):
    """A GGUFReader that records the tensor table instead of mapping tensor data,
    so a truncated file can be measured rather than failing on a reshape."""

    table: list[tuple[str, int, int, int]]  # name, ggml type, elements, end offset

    def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
        table = []
        for field in fields:
            _len, name, _n_dims, dims, raw_type, offset = field.parts
            kind = gguf.GGMLQuantizationType(int(raw_type[0]))
            block, type_size = gguf.GGML_QUANT_SIZES[kind]
            elements = int(np.prod(dims.astype(np.float64)))
            end = int(start_offs) + int(offset[0]) + elements * type_size // block
            table.append((bytes(name).decode("utf-8", "replace"), int(kind), elements, end))
        self.table = table


def read_gguf(path: Path, shown_as: str | None = None) -> GgufInfo:
    """Return the metadata of the GGUF model at ``path`` after checking it.

    ``shown_as`` is how the file is named in messages (default: ``path``).
    Raises GgufError with one plain sentence when the file is missing, not a
    GGUF file, damaged, truncated or of an unsupported architecture. BLOCKING
    (reads the header; milliseconds even for large models).
    """
    name = shown_as or str(path)
    size = _checked_header(path, name)
    try:
        reader = _TableReader(path)
    except (ValueError, KeyError, IndexError, TypeError, OverflowError, UnicodeDecodeError) as exc:
        raise GgufError(f"{name} is a damaged GGUF file (its header cannot be read)") from exc
    tensor_end = max((end for *_, end in reader.table), default=0)
    if tensor_end > size:
        raise GgufError(
            f"{name} is truncated: its tensor data needs {tensor_end:,} bytes but the file has "
            f"{size:,}; download it again"
        )
    return _info(path, size, name, reader)


def gguf_problem(path: Path, shown_as: str | None = None) -> str | None:
    """Return the plain sentence of why ``path`` is not a usable model, None when it is.

    BLOCKING (see :func:`read_gguf`).
    """
    try:
        read_gguf(path, shown_as)
    except GgufError as exc:
        return str(exc)
    return None


def not_a_model(name: str) -> str:
    """Return the one sentence for a path that is missing, unreadable, a folder or
    not a GGUF file (one answer, so an API caller cannot probe which files exist)."""
    return f"{name} is not a GGUF model file (or cannot be read); give the path of a .gguf model"


def _checked_header(path: Path, name: str) -> int:
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEADER.size)
            size = path.stat().st_size
    except OSError:
        raise GgufError(not_a_model(name)) from None
    if len(head) < _HEADER.size or head[:4] != GGUF_MAGIC:
        raise GgufError(not_a_model(name))
    _magic, version, tensors, kvs = _HEADER.unpack(head)
    if version not in (2, 3):
        raise GgufError(f"{name} is GGUF version {version}, which the engine cannot read")
    if tensors > min(_MAX_COUNT, size // _MIN_TENSOR_INFO) or kvs > min(
        _MAX_COUNT, size // _MIN_KV
    ):
        raise GgufError(
            f"{name} is damaged: its header claims {tensors:,} tensors and {kvs:,} metadata "
            f"entries, more than a file of {size:,} bytes can hold; download it again"
        )
    return size


def _info(path: Path, size: int, name: str, reader: _TableReader) -> GgufInfo:
    arch = _text(reader, "general.architecture")
    if arch is None:
        raise GgufError(f"{name} has no general.architecture entry, so no engine can load it")
    if arch not in KNOWN_ARCHITECTURES:
        raise GgufError(
            f"{name} is a {arch!r} model, an architecture the installed engine does not "
            "support; choose a model of another architecture or update the engine"
        )
    file_type = _number(reader, "general.file_type")
    return GgufInfo(
        path=path,
        size_bytes=size,
        architecture=arch,
        name=_text(reader, "general.name"),
        parameter_count=sum(elements for _, _, elements, _ in reader.table),
        tensor_bytes=_tensor_bytes(reader),
        file_type=file_type,
        quantization=quantization_name(file_type),
        context_length=_number(reader, f"{arch}.context_length"),
        block_count=_number(reader, f"{arch}.block_count"),
        embedding_length=_number(reader, f"{arch}.embedding_length"),
        head_count=_number(reader, f"{arch}.attention.head_count"),
        head_count_kv=_number(reader, f"{arch}.attention.head_count_kv"),
        has_chat_template=reader.get_field("tokenizer.chat_template") is not None,
    )


def _tensor_bytes(reader: _TableReader) -> int:
    total = 0
    for _, kind, elements, _ in reader.table:
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        total += elements * type_size // block
    return total


def quantization_name(file_type: int | None) -> str:
    """Return "Q4_K_M", "F16", "F32"... for a ``general.file_type`` value ("unknown" if None)."""
    if file_type is None:
        return "unknown"
    try:
        label = gguf.LlamaFileType(file_type).name
    except ValueError:
        return f"type {file_type}"
    return label.removeprefix("MOSTLY_").removeprefix("ALL_")


def _text(reader: gguf.GGUFReader, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or field.types[:1] != [gguf.GGUFValueType.STRING]:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")


def _number(reader: gguf.GGUFReader, key: str) -> int | None:
    field = reader.get_field(key)
    if field is None or not field.types or field.types[0] == gguf.GGUFValueType.ARRAY:
        return None
    value = field.parts[field.data[0]]
    return int(value[0]) if len(value) else None
