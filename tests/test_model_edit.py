"""Choosing a pool's model writes the config file atomically, comments kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, load_settings
from app.config.model_edit import set_pool_model

CONFIG = """\
# my home lab
allow_cpu_inference = true

[[pools]]
id = "gpu0"   # the big card
# the model I like
model = ""
device_mask = "cpu"

[[pools]]
id = "other"
engine = "mock"
model = "m"
"""


def test_only_the_model_changes_and_comments_stay(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)

    set_pool_model(path, "gpu0", "hf:me/tiny/tiny.gguf", env={})

    assert path.read_text() == CONFIG.replace('model = ""', 'model = "hf:me/tiny/tiny.gguf"')
    assert load_settings(path, {}).pools[0].model == "hf:me/tiny/tiny.gguf"
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_unknown_pool_and_bad_model_leave_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)

    with pytest.raises(ConfigError, match="pool 'nope' is not in"):
        set_pool_model(path, "nope", "x", env={})
    with pytest.raises(ConfigError, match="does not exist"):
        set_pool_model(path, "gpu0", "/no/such/model.gguf", env={})
    assert path.read_text() == CONFIG
