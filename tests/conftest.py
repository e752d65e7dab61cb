"""Shared fixtures for every layer."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


import pytest


@pytest.fixture(scope="session")
def demo_gguf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Return the bytes of the generated demo model (a real, small GGUF file)."""
    from app.engine_host.demo_model import write_demo_model

    return write_demo_model(tmp_path_factory.mktemp("demo") / "demo.gguf").read_bytes()
