"""Model references: ``file:`` or a path, ``hf:OWNER/REPO/FILE.gguf[@REV]``, ``https:``. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

RefKind = Literal["file", "hf", "https"]
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
HF_HINT = 'use hf:OWNER/REPO/FILE.gguf, e.g. "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/x.gguf"'


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed model reference; ``file`` is "" for ``hf:OWNER/REPO`` (pick a file)."""

    kind: RefKind
    text: str
    repo: str = ""
    file: str = ""
    revision: str | None = None
    url: str = ""
    path: str = ""

    @property
    def is_remote(self) -> bool:
        return self.kind != "file"

    @property
    def file_name(self) -> str:
        """Return the model file's name as it will be stored."""
        if self.kind == "hf":
            return self.file.rsplit("/", 1)[-1]
        if self.kind == "https":
            return unquote(urlsplit(self.url).path.rsplit("/", 1)[-1]) or "model.gguf"
        return self.path.rsplit("/", 1)[-1]


def parse_ref(text: str) -> ModelRef:
    """Return the parsed reference. Raises ValueError with a plain sentence naming the fix."""
    ref = text.strip()
    if ref.startswith("hf:"):
        return _parse_hf(ref)
    if ref.startswith("https:") or ref.startswith("http:"):
        parts = urlsplit(ref)
        if parts.scheme != "https" or not parts.netloc or not parts.path.strip("/"):
            raise ValueError(f"{ref!r} is not a download address; use https://host/path/model.gguf")
        return ModelRef("https", ref, url=ref)
    if ref.startswith("file:"):
        return ModelRef("file", ref, path=unquote(urlsplit(ref).path))
    scheme = urlsplit(ref).scheme
    if len(scheme) > 1:
        raise ValueError(
            f"model reference {ref!r} uses the unsupported scheme {scheme!r}; use a file path, "
            "file:/path/model.gguf, hf:OWNER/REPO/FILE.gguf or https://..."
        )
    return ModelRef("file", ref, path=ref)


def _parse_hf(ref: str) -> ModelRef:
    body, _, revision = ref.removeprefix("hf:").partition("@")
    parts = [p for p in body.strip("/").split("/") if p]
    if len(parts) < 2 or not all(_REPO_PART.match(p) for p in parts[:2]):
        raise ValueError(f"{ref!r} does not name a Hugging Face repository; {HF_HINT}")
    if revision == "" and "@" in ref:
        raise ValueError(f"{ref!r} has an empty revision after '@'; remove '@' or name one")
    file = "/".join(parts[2:])
    if file and not file.lower().endswith(".gguf"):
        raise ValueError(f"{ref!r} does not name a .gguf file; {HF_HINT}")
    return ModelRef("hf", ref, repo="/".join(parts[:2]), file=file, revision=revision or None)


def hf_ref(repo: str, file: str, revision: str | None = None) -> str:
    """Return the ``hf:`` reference of ``file`` in ``repo``."""
    return f"hf:{repo}/{file}" + (f"@{revision}" if revision else "")
