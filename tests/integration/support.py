"""Helpers for tests that run the command line as real subprocesses."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    """Return a TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """Return an environment without the caller's server settings, rooted at ``home``."""
    drop = ("BIND_", "AUTH_", "ORCHD_", "LLAMA_ORCH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_STATE_HOME=str(home / "state"),
        XDG_DATA_HOME=str(home / "data"),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env
