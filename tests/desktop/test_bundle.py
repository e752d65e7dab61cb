"""Smoke test of the PyInstaller bundle (dist/llama-orch/, built by `make package`).

Building it takes ~3.5 minutes on 2 cores, too slow for `make test`, so this test
runs against an existing build and is skipped, with the reason, when there is
none; `make package` builds the bundle and then runs this file. The bundle runs
with an empty environment: no checkout, no virtualenv, no PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.support import free_port

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = Path(os.environ.get("LLAMA_ORCH_BUNDLE", ROOT / "dist/llama-orch/llama-orch"))

REQUIRED = os.environ.get("LLAMA_ORCH_BUNDLE_REQUIRED") == "1"  # set by `make package`

pytestmark = pytest.mark.skipif(
    not BUNDLE.is_file() and not REQUIRED,
    reason=f"no bundle at {BUNDLE}: run `make package` to build it (about 3.5 min on 2 cores)",
)


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """Return an environment with nothing of this checkout or its virtualenv."""
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **extra}


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def wait_for(url: str, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get_json(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start(home: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BUNDLE), *args], cwd=home, env=bare_env(home, **env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    assert proc.returncode == 0, out
    return out


def test_version(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BUNDLE), "--version"], cwd=tmp_path, env=bare_env(tmp_path),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("llama-orch 0.")
    assert "llama.cpp engine: llama-server" in done.stdout
    assert "Qt: 6." in done.stdout


def test_serve_answers_capabilities_and_runs_the_demo_engine(tmp_path: Path) -> None:
    """First start: the bundle writes the default config and starts the demo pool on
    llama-cpp-python's server, run by the bundle itself (`llama-orch -m ...`)."""
    url = f"http://127.0.0.1:{free_port()}"
    proc = start(tmp_path, "serve", "--bind", url.removeprefix("http://"))
    try:
        caps = wait_for(f"{url}/v1/capabilities", 60)
        assert isinstance(caps, dict) and caps["api_version"]
        deadline = time.monotonic() + 90
        while True:
            pools = get_json(f"{url}/v1/pools")
            assert isinstance(pools, list)
            if (pools and pools[0]["state"] == "ready") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert pools[0]["pool_id"] == "demo" and pools[0]["state"] == "ready", pools
    finally:
        out = stop(proc)
    assert "llama-orch serving on" in out


def test_gui_offscreen_serves_its_window_and_api(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[server]\nbind = "127.0.0.1:{port}"\n\n[[pools]]\nid = "m0"\nengine = "mock"\n'
        'model = "mock-a"\ndevice_mask = "0"\n'
    )
    proc = start(tmp_path, "gui", "--config", str(cfg), QT_QPA_PLATFORM="offscreen")
    try:
        pools = wait_for(f"http://127.0.0.1:{port}/v1/pools", 60)
        assert isinstance(pools, list) and pools[0]["pool_id"] == "m0"
    finally:
        out = stop(proc)
    assert "API stopped" in out
