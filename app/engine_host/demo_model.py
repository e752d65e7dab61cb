"""The small generated GGUF model used by the demo pool and the tests.

``write_demo_model`` writes a tiny llama-architecture model with random,
seed-deterministic weights and a SentencePiece-style vocabulary (byte fallback
plus a few hundred common English pieces). It loads in llama.cpp, generates
word-like text on a CPU at well over 100 tokens/s, and carries a ChatML chat
template so chat endpoints work. Its output is meaningless by design: it exists
to exercise the serving path without downloading a real model.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

DEMO_MODEL_ID = "demo"

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_CTX_TRAIN = 4096
RMS_EPS = 1e-5

_SPACE = "\u2581"  # SentencePiece's word-boundary marker
_TYPE_NORMAL = int(gguf.TokenType.NORMAL)
_TYPE_UNKNOWN = int(gguf.TokenType.UNKNOWN)
_TYPE_CONTROL = int(gguf.TokenType.CONTROL)
_TYPE_BYTE = int(gguf.TokenType.BYTE)

UNK_ID = 0
BOS_ID = 1
EOS_ID = 2

_PUNCTUATION = (".", ",", "!", "?", "'", "-", ":", ";", "(", ")")
_WORDS_TEXT = (
    "the a and to of in is it you that he was for on are with as I his they be at one "
    "have this from or had by word but not what all were we when your can said there "
    "use an each which she do how their if will up other about out many then them "
    "these so some her would make like him into time has look two more go see no way "
    "could my than first been who its now day get come made may part hello world model "
    "token small demo orch queue pool"
)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")

_Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Token texts, SentencePiece scores and GGUF token types, index-aligned."""

    tokens: tuple[str, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]


def default_demo_model_path() -> Path:
    """Return ``$XDG_DATA_HOME/llama-orch/models/demo.gguf`` (``~/.local/share`` when unset).

    A relative ``XDG_DATA_HOME`` is ignored, as the XDG specification requires.
    Does not touch the file system.
    """
    base = os.environ.get("XDG_DATA_HOME", "")
    data_home = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return data_home / "llama-orch" / "models" / "demo.gguf"


def ensure_demo_model(path: Path | None = None) -> Path:
    """Write the demo model to ``path`` (default location when None) unless a file exists.

    Returns the path. Raises OSError when the folder or file cannot be written.
    Blocks on file I/O (well under a second).
    """
    target = path if path is not None else default_demo_model_path()
    if target.is_file() and target.stat().st_size > 0:
        return target
    return write_demo_model(target)


def write_demo_model(path: Path, *, seed: int = 0) -> Path:
    """Write the demo GGUF model to ``path`` atomically and return ``path``.

    The same ``seed`` always produces the same bytes. Parent folders are
    created. The file appears complete or not at all (temporary file in the
    same folder, fsync, rename). Raises OSError when writing fails. Blocks on
    file I/O.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write_gguf(tmp, seed)
        tmp.chmod(0o644)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def build_vocabulary() -> Vocabulary:
    """Return the demo vocabulary: <unk>, <s>, </s>, 256 byte tokens, pieces, ChatML markers."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [_TYPE_UNKNOWN, _TYPE_CONTROL, _TYPE_CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [_TYPE_BYTE] * 256
    pieces = _pieces()
    tokens += pieces
    types += [_TYPE_NORMAL] * len(pieces)
    tokens += _CHAT_TOKENS
    types += [_TYPE_CONTROL] * len(_CHAT_TOKENS)
    scores = [0.0] * len(tokens)
    first_piece = 3 + 256
    for rank in range(len(pieces)):
        scores[first_piece + rank] = -float(rank)
    return Vocabulary(tuple(tokens), tuple(scores), tuple(types))


def _pieces() -> list[str]:
    """Return the normal pieces, most useful first, each word with all its prefixes.

    SentencePiece merging in llama.cpp only joins two symbols when the joined
    text is itself a token, so every prefix of ``▁word`` is in the vocabulary.
    """
    words = _WORDS_TEXT.split()
    ordered: dict[str, None] = {_SPACE: None}
    for word in words:
        ordered[_SPACE + word] = None
    for word in words:
        full = _SPACE + word
        for end in range(2, len(full)):
            ordered.setdefault(full[:end], None)
    for letter in "abcdefghijklmnopqrstuvwxyz":
        ordered.setdefault(letter, None)
    for mark in _PUNCTUATION:
        ordered.setdefault(mark, None)
    return list(ordered)


def _write_gguf(path: Path, seed: int) -> None:
    vocab = build_vocabulary()
    writer = gguf.GGUFWriter(str(path), "llama")
    _add_metadata(writer, vocab)
    for name, tensor in _tensors(vocab, seed):
        writer.add_tensor(name, tensor)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _add_metadata(writer: gguf.GGUFWriter, vocab: Vocabulary) -> None:
    writer.add_name("llama-orch demo")
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(vocab.tokens))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(list(vocab.tokens))
    writer.add_token_scores(list(vocab.scores))
    writer.add_token_types(list(vocab.types))
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def _tensors(vocab: Vocabulary, seed: int) -> list[tuple[str, _Array]]:
    """Return (name, array) pairs; numpy shapes are ggml's ``ne`` reversed.

    Dimension 0 of every embedding is a constant and column 0 of the output
    matrix is a per-token bias, so word pieces dominate sampling and the
    demo's text reads like (random) words instead of raw bytes.
    """
    rng = np.random.default_rng(seed)
    n_vocab = len(vocab.tokens)
    embd = _normal(rng, (n_vocab, N_EMBD), 0.5)
    embd[:, 0] = 1.0
    out = _normal(rng, (n_vocab, N_EMBD), 0.1)
    out[:, 0] = np.where(np.array(vocab.types) == _TYPE_NORMAL, 3.0, -3.0)
    named = [("token_embd.weight", embd)]
    for layer in range(N_LAYER):
        named += _layer_tensors(rng, layer)
    named += [("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))]
    named += [("output.weight", out)]
    return named


def _layer_tensors(rng: np.random.Generator, layer: int) -> list[tuple[str, _Array]]:
    kv_dim = N_EMBD // N_HEAD * N_HEAD_KV
    prefix = f"blk.{layer}."
    shapes: list[tuple[str, tuple[int, ...]]] = [
        ("attn_q.weight", (N_EMBD, N_EMBD)),
        ("attn_k.weight", (kv_dim, N_EMBD)),
        ("attn_v.weight", (kv_dim, N_EMBD)),
        ("attn_output.weight", (N_EMBD, N_EMBD)),
        ("ffn_gate.weight", (N_FF, N_EMBD)),
        ("ffn_up.weight", (N_FF, N_EMBD)),
        ("ffn_down.weight", (N_EMBD, N_FF)),
    ]
    tensors = [(prefix + name, _normal(rng, shape, 0.05)) for name, shape in shapes]
    ones = np.ones(N_EMBD, dtype=np.float32)
    tensors += [(prefix + "attn_norm.weight", ones), (prefix + "ffn_norm.weight", ones.copy())]
    return tensors


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> _Array:
    return rng.normal(0.0, std, size=shape).astype(np.float32)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
