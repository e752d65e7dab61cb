"""Writing one pool's model into the config file, keeping the user's comments.

A round trip through ``tomlkit`` changes only the ``model`` value of that pool;
the result is validated before it atomically replaces the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

import tomlkit

from app.config.files import atomic_write
from app.config.schema import ConfigError, Problem
from app.config.validate import parse_settings


def set_pool_model(
    path: Path, pool_id: str, model: str, env: Mapping[str, str] = os.environ
) -> None:
    """Set ``model`` of pool ``pool_id`` in the config at ``path`` (atomic, comments kept).

    Raises ConfigError when the pool is not in the file or the result would not
    load; the file is then unchanged. BLOCKING (reads, validates, writes the file).
    """
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    pools = doc.get("pools")
    entry = next((p for p in pools or () if p.get("id") == pool_id), None)
    if entry is None:
        message = f"pool {pool_id!r} is not in {path}; add it there first"
        raise ConfigError([Problem(f"pools.{pool_id}", message)])
    entry["model"] = model
    text = tomlkit.dumps(doc)
    parse_settings(tomllib.loads(text), env, source=path)
    atomic_write(path, text.encode("utf-8"))


def add_pool(
    path: Path, pool_id: str, model: str, device_mask: str, env: Mapping[str, str] = os.environ
) -> None:
    """Append a llamacpp ``[[pools]]`` entry serving ``model`` on ``device_mask``.

    Raises ConfigError when the id is taken or the result would not load; the
    file is then unchanged. The pool starts with the next start. BLOCKING.
    """
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    pools = doc.get("pools")
    if pools is None:
        pools = tomlkit.aot()
        doc["pools"] = pools
    if any(p.get("id") == pool_id for p in pools):
        message = f"there is already a pool {pool_id!r}; pick another id"
        raise ConfigError([Problem(f"pools.{pool_id}", message)])
    entry = tomlkit.table()
    entry.update({"id": pool_id, "engine": "llamacpp", "model": model, "device_mask": device_mask})
    pools.append(entry)
    text = tomlkit.dumps(doc)
    parse_settings(tomllib.loads(text), env, source=path)
    atomic_write(path, text.encode("utf-8"))
