"""The command line as users run it: real subprocesses, real servers on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import clean_env, free_port

ROOT = Path(__file__).resolve().parents[2]
GUI_MODULES = {"PySide6", "aiohttp", "pynvml", "qasync", "pyqtgraph"}


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _mock_config(path: Path, port: int, bind_host: str = "127.0.0.1") -> Path:
    path.write_text(
        f"""
[server]
bind = "{bind_host}:{port}"

[[pools]]
id = "m0"
engine = "mock"
model = "mock-a"
device_mask = "0"
mock_tokens_per_s = 200

[[pools]]
id = "m1"
engine = "mock"
model = "mock-b"
device_mask = "1"
mock_tokens_per_s = 200
"""
    )
    return path


def test_the_core_imports_no_gui_http_or_nvml() -> None:
    code = (
        "import app.orchestrator, app.orchestrator.service, sys; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serve_path_never_imports_qt() -> None:
    code = (
        "import app.main, app.api.server, app.engine_host.llamacpp, sys; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'PySide6','qasync','pyqtgraph'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = _mock_config(tmp_path / "good.toml", 8080)
    ok = _cli("check-config", str(good), env=clean_env(tmp_path))
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[admission]\nqueue_capcity = 3\n[server]\nbind = "0.0.0.0:80"\n')
    res = _cli("check-config", str(bad), env=clean_env(tmp_path))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) >= 2
    assert any("queue_capcity" in ln and "queue_capacity" in ln for ln in lines)
    assert any("AUTH_TOKEN" in ln for ln in lines)
    assert "Traceback" not in res.stderr


def test_serve_refuses_lan_bind_without_token(tmp_path: Path) -> None:
    cfg = _mock_config(tmp_path / "c.toml", free_port(), bind_host="0.0.0.0")
    res = _cli("serve", "--config", str(cfg), env=clean_env(tmp_path), timeout=30)
    assert res.returncode == 2
    assert "BIND_ADDR" in res.stderr and "AUTH_TOKEN" in res.stderr
    assert "Traceback" not in res.stderr


def test_demo_model_and_gpus_commands(tmp_path: Path) -> None:
    out = tmp_path / "m" / "demo.gguf"
    res = _cli("demo-model", str(out), env=clean_env(tmp_path))
    assert res.returncode == 0 and out.stat().st_size > 100_000
    gpus = _cli("gpus", env=clean_env(tmp_path))
    assert gpus.returncode == 0 and gpus.stdout.strip()
    as_json = json.loads(_cli("gpus", "--json", env=clean_env(tmp_path)).stdout)
    assert "gpus" in as_json
    if not as_json["gpus"]:
        assert as_json["hint"]


def _launch(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``python -m app ARGS`` with its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "app", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _pools_when(base: str, pred: Callable[[list[Any]], bool], within_s: float) -> list[Any] | None:
    """Poll GET /v1/pools until ``pred(pools)`` holds; return the last pools seen."""
    deadline = time.monotonic() + within_s
    pools: list[Any] | None = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            pools = _get(base + "/v1/pools")  # type: ignore[assignment]
            if pools is not None and pred(pools):
                break
        time.sleep(0.2)
    return pools


def _stream_task(base: str, body: dict[str, Any], timeout: float) -> tuple[dict[str, Any], str]:
    """POST ``body`` to /v1/tasks, read its whole SSE stream; return (admission, stream)."""
    req = urllib.request.Request(
        base + "/v1/tasks",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 202
        admission = json.loads(resp.read())
    with urllib.request.urlopen(
        f"{base}/v1/tasks/{admission['task_id']}/stream", timeout=timeout
    ) as resp:
        return admission, resp.read().decode()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_serve_answers_and_drains_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    cfg = _mock_config(tmp_path / "c.toml", port)
    proc = _launch("serve", "--config", str(cfg), env=clean_env(tmp_path))
    try:
        base = f"http://127.0.0.1:{port}"
        pools = _pools_when(base, lambda ps: all(p["ready"] for p in ps), 30)
        assert isinstance(pools, list) and {p["pool_id"] for p in pools} == {"m0", "m1"}
        admission, body = _stream_task(
            base, {"prompt": "hi", "max_tokens": 5, "model_ref": "mock-b"}, 10
        )
        assert admission["pool_id"] == "m1"
        assert body.count("event: token") == 5 and "event: end" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        _stop(proc)


@pytest.mark.engine
def test_first_start_writes_default_config_and_serves_demo_model(tmp_path: Path) -> None:
    port = free_port()
    proc = _launch("serve", "--bind", f"127.0.0.1:{port}", env=clean_env(tmp_path))
    try:
        base = f"http://127.0.0.1:{port}"
        pools = _pools_when(base, lambda ps: any(p["ready"] for p in ps), 90)
        assert pools and any(p["ready"] for p in pools), "the demo pool did not become ready"
        config = (tmp_path / "config" / "llama-orch" / "config.toml").read_text()
        assert 'id = "demo"' in config and "demo = true" in config and "slots = 4" in config
        (demo,) = [p for p in pools if p["pool_id"] == "demo"]
        assert (demo["engine"], demo["slots_total"]) == ("llamacpp", 4), demo
        _, body = _stream_task(base, {"prompt": "Hello", "max_tokens": 8, "seed": 3}, 30)
        assert body.count("event: token") == 8 and "event: end" in body
        assert _processes_mentioning(str(tmp_path)), "the engine process should be running"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            _stop(proc)
    assert _processes_mentioning(str(tmp_path)) == [], "engine processes left behind"


def _processes_mentioning(text: str) -> list[int]:
    """Return pids whose command line mentions ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def test_gui_quits_cleanly_on_sigterm(tmp_path: Path) -> None:
    """The desktop app (offscreen) serves the API on its loop and stops on SIGTERM."""
    port = free_port()
    cfg = _mock_config(tmp_path / "c.toml", port)
    env = clean_env(tmp_path, QT_QPA_PLATFORM="offscreen")
    proc = _launch("gui", "--config", str(cfg), env=env)
    try:
        pools = _pools_when(f"http://127.0.0.1:{port}", bool, 30)
        assert isinstance(pools, list) and len(pools) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "API stopped" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        _stop(proc)
