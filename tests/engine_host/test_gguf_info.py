"""GGUF checks: the demo model's metadata, and each broken kind refused in one sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine_host import demo_model
from app.engine_host.gguf_info import GgufError, gguf_problem, quantization_name, read_gguf
from tests.support.gguf_files import BAD_KINDS, write_bad


def test_demo_model_metadata_is_read(tmp_path: Path, demo_gguf: bytes) -> None:
    path = tmp_path / "demo.gguf"
    path.write_bytes(demo_gguf)

    info = read_gguf(path)

    assert (info.architecture, info.quantization, info.name) == ("llama", "F32", "llama-orch demo")
    assert info.context_length == demo_model.N_CTX_TRAIN
    assert (info.block_count, info.embedding_length) == (demo_model.N_LAYER, demo_model.N_EMBD)
    assert (info.head_count, info.head_count_kv) == (demo_model.N_HEAD, demo_model.N_HEAD_KV)
    assert info.has_chat_template
    assert info.size_bytes == len(demo_gguf)
    vocab = len(demo_model.build_vocabulary().tokens)
    e, f, n = demo_model.N_EMBD, demo_model.N_FF, demo_model.N_LAYER
    per_layer = 2 * e * e + 2 * e * e + 3 * e * f + 2 * e  # q, o, k, v, ffn x3, 2 norms
    assert info.parameter_count == 2 * vocab * e + n * per_layer + e
    assert info.tensor_bytes == 4 * info.parameter_count
    assert gguf_problem(path) is None


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_model_files_are_refused_with_one_plain_sentence(
    tmp_path: Path, demo_gguf: bytes, kind: str
) -> None:
    bad, sentence = write_bad(kind, tmp_path, demo_gguf)

    with pytest.raises(GgufError) as caught:
        read_gguf(bad, shown_as=f"models/{bad.name}")

    message = str(caught.value)
    assert message.startswith(f"models/{sentence}")
    assert "\n" not in message and "Traceback" not in message and str(tmp_path) not in message


def test_missing_folder_empty_and_text_files_get_one_answer(tmp_path: Path) -> None:
    (tmp_path / "empty.gguf").write_bytes(b"")
    (tmp_path / "dir.gguf").mkdir()
    (tmp_path / "notes.gguf").write_text("hello")
    answers = {
        (gguf_problem(tmp_path / name, shown_as="X") or "")
        for name in ("nope.gguf", "empty.gguf", "dir.gguf", "notes.gguf")
    }
    assert answers == {
        "X is not a GGUF model file (or cannot be read); give the path of a .gguf model"
    }


def test_quantization_names() -> None:
    assert quantization_name(15) == "Q4_K_M"
    assert quantization_name(1) == "F16"
    assert quantization_name(None) == "unknown"
    assert quantization_name(999) == "type 999"
