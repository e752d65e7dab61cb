"""Start-up removes the temporaries a killed config save left behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app.config import remove_stale_temporaries, save_settings
from app.config.schema import Settings
from app.main import load_or_create_settings

OLD = time.time() - 3600


def _touch(path: Path, mtime: float) -> Path:
    path.write_bytes(b"half a config")
    os.utime(path, (mtime, mtime))
    return path


CASES = [
    # (name, file name, modified, removed)
    ("stale temporary", ".config.toml.0123456789ab.tmp", OLD, True),
    ("a save in progress", ".config.toml.0123456789ab.tmp", None, False),
    ("another file's temporary", ".other.toml.0123456789ab.tmp", OLD, False),
    ("not our pattern", ".config.toml.backup.tmp", OLD, False),
    ("the config itself", "config.toml", OLD, False),
]


@pytest.mark.parametrize(
    ("name", "mtime", "removed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_only_stale_temporaries_of_the_config_are_removed(
    tmp_path: Path, name: str, mtime: float | None, removed: bool
) -> None:
    config = tmp_path / "config.toml"
    candidate = _touch(tmp_path / name, time.time() if mtime is None else mtime)
    gone = remove_stale_temporaries(config)
    assert gone == ([candidate] if removed else [])
    assert candidate.exists() is not removed


def test_loading_the_config_at_start_cleans_up(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    save_settings(Settings(), config)
    stale = _touch(tmp_path / ".config.toml.deadbeef0001.tmp", OLD)
    settings, created = load_or_create_settings(config, env={})
    assert not created and isinstance(settings, Settings)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_a_missing_folder_is_not_an_error(tmp_path: Path) -> None:
    assert remove_stale_temporaries(tmp_path / "nowhere" / "config.toml") == []
