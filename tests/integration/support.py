"""Helpers for tests that run the command line as real subprocesses."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


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


ROOT = Path(__file__).resolve().parents[2]


TOKEN = "openai-client-test-token"


@dataclass
class Served:
    """A ``llama-orch serve`` subprocess and how to reach it."""

    base: str
    token: str
    proc: subprocess.Popen[str]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Return (status, parsed JSON or None) of one authenticated request."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def task(self, task_id: str) -> dict[str, Any]:
        status, view = self.call("GET", f"/v1/tasks/{task_id}")
        assert status == 200, view
        return dict(view)

    def wait_for_state(self, task_id: str, state: str, within_s: float = 10) -> dict[str, Any]:
        """Poll the task until it reaches ``state``; fails the test after ``within_s``."""
        deadline = time.monotonic() + within_s
        while True:
            view = self.task(task_id)
            if view["state"] == state or time.monotonic() > deadline:
                assert view["state"] == state, view
                return view
            time.sleep(0.05)


@contextlib.contextmanager
def serve(
    home: Path, pools_toml: str, *, top: str = "", ready_within_s: float = 60
) -> Iterator[Served]:
    """Run ``llama-orch serve`` with ``pools_toml`` (and top-level keys ``top``) until
    every pool is ready; stop it after."""
    port = free_port()
    config = home / "config.toml"
    config.write_text(f'{top}\n[server]\nbind = "127.0.0.1:{port}"\n{pools_toml}')
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--config", str(config)],
        env=clean_env(home, AUTH_TOKEN=TOKEN),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served(f"http://127.0.0.1:{port}", TOKEN, proc)
    try:
        _wait_ready(served, ready_within_s)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _wait_ready(served: Served, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert served.proc.poll() is None, served.proc.stderr.read() if served.proc.stderr else ""
        with contextlib.suppress(OSError):
            status, pools = served.call("GET", "/v1/pools")
            if status == 200 and pools and all(p["ready"] for p in pools):
                return
        time.sleep(0.1)
    pytest.fail(f"the server's pools were not ready within {within_s} s")
