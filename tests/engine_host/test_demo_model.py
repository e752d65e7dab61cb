"""The generated demo model: file properties, and generation in a real llama.cpp."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest

from app.engine_host import demo_model
from app.engine_host.demo_model import (
    DEMO_MODEL_ID,
    default_demo_model_path,
    ensure_demo_model,
    write_demo_model,
)
from tests.engine_host.llama_server import llama_server, post_json


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_is_small_gguf_and_deterministic(tmp_path: Path) -> None:
    first = write_demo_model(tmp_path / "a" / "demo.gguf", seed=3)
    second = write_demo_model(tmp_path / "b.gguf", seed=3)
    other = write_demo_model(tmp_path / "c.gguf", seed=4)

    assert first == tmp_path / "a" / "demo.gguf"
    assert 100_000 < first.stat().st_size < 2_000_000
    assert first.read_bytes()[:4] == b"GGUF"
    assert _digest(first) == _digest(second)
    assert _digest(first) != _digest(other)


def test_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "demo.gguf"
    target.write_bytes(b"old contents")

    write_demo_model(target)

    assert [p.name for p in tmp_path.iterdir()] == ["demo.gguf"]
    assert target.read_bytes()[:4] == b"GGUF"


def test_metadata_describes_a_llama_model_with_chat_template(tmp_path: Path) -> None:
    reader = gguf.GGUFReader(write_demo_model(tmp_path / "demo.gguf"))

    def value(key: str) -> Any:
        return reader.fields[key].contents()

    assert value("general.architecture") == "llama"
    assert value("llama.embedding_length") == 64
    assert value("llama.block_count") == 2
    assert value("llama.context_length") >= 2048
    assert value("tokenizer.ggml.model") == "llama"
    tokens = value("tokenizer.ggml.tokens")
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert tokens[3 + 0x41] == "<0x41>"
    assert {"\u2581the", "<|im_start|>", "<|im_end|>"} <= set(tokens)
    assert len(tokens) == len(set(tokens))
    assert "<|im_start|>" in value("tokenizer.chat_template")
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "blk.1.ffn_down.weight", "output.weight"} <= names


def test_default_path_follows_xdg_data_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/data/home")
    assert default_demo_model_path() == Path("/data/home/llama-orch/models/demo.gguf")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    expected = Path.home() / ".local/share/llama-orch/models/demo.gguf"
    assert default_demo_model_path() == expected
    assert DEMO_MODEL_ID == "demo"


def test_ensure_writes_only_when_missing(tmp_path: Path) -> None:
    target = tmp_path / "models" / "demo.gguf"
    assert ensure_demo_model(target) == target
    written = target.stat().st_mtime_ns
    target.write_bytes(b"GGUF kept as is")

    assert ensure_demo_model(target) == target
    assert target.read_bytes() == b"GGUF kept as is"
    assert written > 0


def test_ensure_uses_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    path = ensure_demo_model()
    assert path == tmp_path / "llama-orch" / "models" / "demo.gguf"
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's llama-server on the demo model; yields its base URL."""
    folder = tmp_path_factory.mktemp("model")
    path = write_demo_model(folder / "demo.gguf")
    with llama_server(path, "-c", "512", log=folder / "server.log") as base:
        yield base


def _complete(base: str, seed: int) -> str:
    body = {"prompt": "Hello", "n_predict": 20, "seed": seed, "temperature": 0.8}
    out = post_json(f"{base}/completion", body | {"cache_prompt": False})
    assert out["tokens_predicted"] == 20
    assert out["stop_type"] == "limit"
    return str(out["content"])


@pytest.mark.engine
def test_llama_cpp_generates_word_like_text_reproducibly(llama: str) -> None:
    first = _complete(llama, seed=42)
    again = _complete(llama, seed=42)
    others = {_complete(llama, seed=s) for s in (1, 2, 3)}

    assert first == again
    assert len(first.split()) >= 5
    assert others - {first}


@pytest.mark.engine
def test_llama_cpp_tokenizes_common_words_as_single_pieces(llama: str) -> None:
    ids = post_json(f"{llama}/tokenize", {"content": "hello the world", "add_special": True})
    ids = ids["tokens"]
    assert ids[0] == demo_model.BOS_ID
    pieces = [post_json(f"{llama}/detokenize", {"tokens": [i]})["content"] for i in ids[1:]]
    assert pieces == [" hello", " the", " world"]


@pytest.mark.engine
def test_llama_cpp_chat_completion_uses_the_template(llama: str) -> None:
    out = post_json(
        f"{llama}/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 10, "seed": 5},
    )
    message = out["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"].strip()
    assert out["usage"]["completion_tokens"] == 10
