"""Helpers for tests that run the command line as real subprocesses."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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


ROOT = Path(__file__).resolve().parents[2]


def launch_serve(
    config: Path,
    env: dict[str, str],
    *,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[str]:
    """Start ``python -m app serve --config CONFIG`` with stdout and stderr captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--config", str(config)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,  # noqa: PLW1509 (only resource limits, set before exec)
    )


def wait_listening(proc: subprocess.Popen[str], port: int, within_s: float = 30.0) -> None:
    """Return once ``port`` on loopback accepts connections; raise if ``proc`` exits first."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"serve exited with {proc.returncode}: {err[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise AssertionError(f"serve did not listen on port {port} within {within_s} s")


def end_process(proc: subprocess.Popen[str]) -> str:
    """SIGKILL ``proc`` if it still runs; return its captured stderr."""
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate(timeout=30)
    return err or ""


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """GET ``path`` on loopback ``port`` with exactly ``headers``; return (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    """Write ``text`` to ``path`` and give it ``mode``; return the path."""
    path.write_text(text)
    path.chmod(mode)
    return path
