"""Loading: config files from disk, the default path and first-start defaults."""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from app.config.schema import ConfigError, PoolSettings, Problem, Settings, xdg_dir
from app.config.validate import parse_settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        reason = (
            "config file not found; create it (see resources/default-config.toml) or pass --config"
        )
    except OSError as exc:
        reason = f"cannot read the config file ({exc.strerror}); fix its permissions or the path"
    except UnicodeDecodeError:
        reason = "the config file is not UTF-8 text; save it as UTF-8"
    except tomllib.TOMLDecodeError as exc:
        reason = f"not valid TOML: {exc}; fix the syntax there"
    raise ConfigError([Problem(str(path), reason)])


def load_settings(path: Path | None, env: Mapping[str, str] = os.environ) -> Settings:
    """Return the settings in the TOML file at ``path`` (defaults when ``path`` is None).

    Raises ConfigError listing every problem, or naming the path when the file is
    missing, unreadable or not TOML. Blocks (reads files).
    """
    if path is None:
        return parse_settings({}, env)
    return parse_settings(_read_toml(path), env, source=path)


def check_config(path: Path, env: Mapping[str, str] = os.environ) -> list[Problem]:
    """Return every problem in the config at ``path``; ``[]`` when it is valid. Blocks."""
    try:
        load_settings(path, env)
    except ConfigError as exc:
        return exc.problems
    return []


def check_config_main(path: str, env: Mapping[str, str] = os.environ) -> int:
    """Print ``ok: PATH`` (stdout) and return 0, or one line per problem (stderr) and return 2.

    Warnings (a pool's missing model file) print as ``warning: ...`` lines and keep exit 0.
    """
    try:
        settings = load_settings(Path(path), env)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"ok: {path}")
    return 0


def default_config_path(env: Mapping[str, str] = os.environ) -> Path:
    """Return ``$LLAMA_ORCH_CONFIG``, else ``$XDG_CONFIG_HOME/llama-orch/config.toml``."""
    explicit = env.get("LLAMA_ORCH_CONFIG", "")
    if explicit:
        return Path(explicit).expanduser()
    return xdg_dir(env, "XDG_CONFIG_HOME", ".config") / "llama-orch" / "config.toml"


DEMO_SLOTS = 4


def default_settings(gpu_indices: Sequence[int], demo_model_path: Path) -> Settings:
    """Return the first-start config: a model-less llamacpp pool per GPU plus the demo pool.

    The demo pool answers four clients at once (llama-server slots; its model is tiny, so
    four contexts of 2,048 tokens cost little memory).
    """
    pools = [PoolSettings(id=f"gpu{i}", model="", device_mask=str(i)) for i in gpu_indices]
    demo_mask = str(min(gpu_indices)) if gpu_indices else "cpu"
    demo = PoolSettings(
        id="demo",
        model=f"file:{demo_model_path}",
        device_mask=demo_mask,
        ctx=2048,
        slots=DEMO_SLOTS,
        demo=True,
    )
    return Settings(pools=[*pools, demo])
