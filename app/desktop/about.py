"""The version report shared by ``llama-orch --version`` and Help → About. Pure."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Sequence
from dataclasses import dataclass

DISTRIBUTION = "llama-orch-desktop"
FALLBACK_VERSION = "0.1.0"


def app_version() -> str:
    """Return this program's version (from the installed metadata, else the built-in one)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return FALLBACK_VERSION


@dataclass(frozen=True)
class VersionFacts:
    """What the report names; ``None`` means absent (e.g. no NVIDIA driver)."""

    app: str
    engines: Sequence[str]
    qt: str | None
    driver: str | None
    cuda: str | None
    python: str = platform.python_version()


def version_lines(facts: VersionFacts) -> list[str]:
    """Return the report, one fact per line. Pure."""
    engines = ", ".join(dict.fromkeys(facts.engines)) or "none found"
    gpu = "not found (no NVIDIA driver loaded)"
    if facts.driver:
        gpu = facts.driver + (f", CUDA {facts.cuda}" if facts.cuda else "")
    return [
        f"llama-orch {facts.app}",
        f"llama.cpp engine: {engines}",
        f"Qt: {facts.qt or 'not installed'}",
        f"NVIDIA driver: {gpu}",
        f"Python: {facts.python}",
    ]
