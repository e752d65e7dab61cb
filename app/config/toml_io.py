"""Writing: settings as TOML text and the atomic save of the config file."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.config.files import atomic_write
from app.config.schema import (
    LLAMACPP_KEYS,
    MOCK_KEYS,
    OPENAI_KEYS,
    ConfigError,
    PoolSettings,
    Settings,
)
from app.config.validate import validate_data

_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_char(char: str) -> str:
    if char in _TOML_ESCAPES:
        return _TOML_ESCAPES[char]
    return f"\\u{ord(char):04X}" if ord(char) < 0x20 or ord(char) == 0x7F else char


def _pool_values(pool: PoolSettings) -> dict[str, Any]:
    skip = (() if pool.engine == "mock" else MOCK_KEYS) + (
        () if pool.engine == "openai" else OPENAI_KEYS
    )
    skip += () if pool.engine == "llamacpp" else LLAMACPP_KEYS
    return {k: v for k, v in pool.model_dump().items() if k not in skip}


def to_toml(settings: Settings) -> str:
    """Return the file form of ``settings``: file values only, no token. Does not block."""
    values = settings.file_values()
    lines = [f"allow_cpu_inference = {_toml_value(values.allow_cpu_inference)}"]
    for table in ("server", "admission", "sessions", "engines", "models"):
        lines += ["", f"[{table}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in getattr(values, table).model_dump().items()]
    for pool in values.pools:
        lines += [
            "",
            "[[pools]]",
            *(f"{k} = {_toml_value(v)}" for k, v in _pool_values(pool).items()),
        ]
    return "# llama-orch configuration\n" + "\n".join(lines) + "\n"


def save_settings(
    settings: Settings, path: Path, *, fsync: Callable[[int], None] = os.fsync
) -> None:
    """Write ``settings`` to ``path`` as TOML with mode 0600 (see :func:`atomic_write`).

    Writes the file's own values: never the token or values from the environment.
    Raises ConfigError when the settings would not load back, OSError on I/O
    failure (the old file is then intact). BLOCKING: run it in a worker thread.
    """
    text = to_toml(settings)
    _, found = validate_data(tomllib.loads(text))
    if found:
        raise ConfigError(found)
    atomic_write(path, text.encode("utf-8"), fsync=fsync)
