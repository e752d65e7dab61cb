"""Where the upstream llama-orch contract files are, and how to load them.

The files live beside the repository (``../shared/upstream-contract`` from the
repository root: CI copies ``shared/`` next to the clone). A missing copy fails
the contract tests with a message saying where they were looked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACT_DIR = REPO_ROOT / ".." / "shared" / "upstream-contract"


def contract_file(relative: str) -> Path:
    """Return the path of an upstream contract file; fails the test when it is missing."""
    path = CONTRACT_DIR / relative
    if not path.is_file():
        pytest.fail(
            f"upstream contract file {relative} not found under {CONTRACT_DIR.resolve()}; "
            "put a copy of shared/upstream-contract beside the repository clone"
        )
    return path


def load_json(relative: str) -> Any:
    """Return the parsed JSON contract file ``relative``."""
    return json.loads(contract_file(relative).read_text(encoding="utf-8"))


def load_yaml(relative: str) -> Any:
    """Return the parsed YAML contract file ``relative``."""
    return yaml.safe_load(contract_file(relative).read_text(encoding="utf-8"))
