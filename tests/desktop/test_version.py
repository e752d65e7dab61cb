"""llama-orch --version: app, llama.cpp engine, Qt, NVIDIA driver/CUDA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.desktop.about import VersionFacts, version_lines
from tests.integration.support import clean_env

ROOT = Path(__file__).resolve().parents[2]


def test_the_report_names_each_component() -> None:
    facts = VersionFacts(
        app="0.1.0",
        engines=["llama-server b4500", "llama-cpp-python 0.3.36"],
        qt="6.11.3 (PySide6 6.11.3)",
        driver="550.54.14",
        cuda="12.4",
        python="3.11.7",
    )

    assert version_lines(facts) == [
        "llama-orch 0.1.0",
        "llama.cpp engine: llama-server b4500, llama-cpp-python 0.3.36",
        "Qt: 6.11.3 (PySide6 6.11.3)",
        "NVIDIA driver: 550.54.14, CUDA 12.4",
        "Python: 3.11.7",
    ]


def test_absent_parts_are_said_plainly() -> None:
    facts = VersionFacts(app="0.1.0", engines=[], qt=None, driver=None, cuda=None)

    lines = version_lines(facts)

    assert "llama.cpp engine: none found" in lines
    assert "Qt: not installed" in lines
    assert "NVIDIA driver: not found (no NVIDIA driver loaded)" in lines


def test_version_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "--version"],
        env=clean_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("llama-orch 0.")
    assert lines[1].startswith("llama.cpp engine: llama-server 0.")
    assert lines[2].startswith("Qt: 6.")
    assert lines[3].startswith("NVIDIA driver: ")
