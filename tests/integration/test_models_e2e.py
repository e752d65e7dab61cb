"""End to end: ``serve`` plus ``llama-orch pull hf:...`` against the fake hub, a pool
reloaded onto the pulled model (persisted) streams tokens, and after a restart the
same model serves."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import ROOT, clean_env, free_port
from tests.integration.test_cli import _launch, _pools_when, _stop, _stream_task
from tests.support.fake_hub import FakeHub

REPO = "llama-orch/demo-GGUF"
FILE = "demo.Q8_0.gguf"
REF = f"hf:{REPO}/{FILE}"


@pytest.fixture
def hub_url(demo_gguf: bytes) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    hub = FakeHub({REPO: {FILE: demo_gguf}})
    url = asyncio.run_coroutine_threadsafe(hub.start(), loop).result(10)
    yield url
    asyncio.run_coroutine_threadsafe(hub.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _post(url: str, body: dict[str, Any], timeout: float = 90) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _serve_until_ready(cfg: Path, env: dict[str, str], port: int, what: str) -> Any:
    proc = _launch("serve", "--config", str(cfg), env=env)
    pools = _pools_when(f"http://127.0.0.1:{port}", lambda ps: ps[0]["state"] == what, 60)
    assert pools and pools[0]["state"] == what, (pools, proc.poll())
    return proc, pools[0]


def _sigterm(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        _stop(proc)


@pytest.mark.engine
def test_pull_then_use_on_a_pool_survives_a_restart(tmp_path: Path, hub_url: str) -> None:
    port = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'allow_cpu_inference = true\n[server]\nbind = "127.0.0.1:{port}"\n\n'
        '[[pools]]\nid = "chat"  # my pool\nmodel = ""\ndevice_mask = "cpu"\nctx = 512\n'
    )
    env = clean_env(tmp_path, HF_ENDPOINT=hub_url, HF_TOKEN="hf_never_printed")
    base = f"http://127.0.0.1:{port}"

    proc, pool = _serve_until_ready(cfg, env, port, "needs_model")
    try:
        pulled = subprocess.run(
            [sys.executable, "-m", "app", "pull", REF],
            check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr
        assert "100.0%" in pulled.stderr and f"demo.Q8_0: {tmp_path}/data" in pulled.stderr
        assert "hf_never_printed" not in pulled.stderr + pulled.stdout
        result = _post(f"{base}/v1/pools/chat/reload", {"new_model_ref": REF, "persist": True})
        assert result["ok"], result
        _, body = _stream_task(base, {"prompt": "Hello", "max_tokens": 6, "seed": 1}, 30)
        assert body.count("event: token") == 6 and "event: end" in body
    finally:
        _sigterm(proc)
    assert f'model = "{REF}"' in cfg.read_text() and "# my pool" in cfg.read_text()

    proc, pool = _serve_until_ready(cfg, env, port, "ready")
    try:
        assert pool["model"] == "demo.Q8_0"
        _, body = _stream_task(base, {"prompt": "Hello", "max_tokens": 4, "seed": 1}, 30)
        assert body.count("event: token") == 4
        listed = subprocess.run(
            [sys.executable, "-m", "app", "models", "--json"],
            check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        (entry,) = json.loads(listed.stdout)
        assert entry["source_url"] == REF and entry["downloaded"]
    finally:
        _sigterm(proc)
