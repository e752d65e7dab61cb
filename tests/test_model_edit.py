"""Choosing a pool's model writes the config file atomically, comments kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, load_settings
from app.config.model_edit import add_pool, set_pool_model

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
    (tmp_path / "notes.gguf").write_text("not a model")
    with pytest.raises(ConfigError, match=r"notes\.gguf is not a GGUF model file"):
        set_pool_model(path, "gpu0", str(tmp_path / "notes.gguf"), env={})
    assert path.read_text() == CONFIG


def test_new_pool_is_appended_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)

    add_pool(path, "gpu1-tiny", "hf:me/tiny/tiny.gguf", "1", env={})

    text = path.read_text()
    assert text.startswith(CONFIG)
    pools = load_settings(path, {}).pools
    assert (pools[-1].id, pools[-1].model, pools[-1].device_mask) == (
        "gpu1-tiny",
        "hf:me/tiny/tiny.gguf",
        "1",
    )
    with pytest.raises(ConfigError, match="already a pool 'gpu0'"):
        add_pool(path, "gpu0", "x.gguf", "0", env={})
