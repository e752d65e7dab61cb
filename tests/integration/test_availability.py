"""A flaky engine and a hostile network against a real ``llama-orch serve``."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.support import (
    clean_env,
    end_process,
    free_port,
    http_get,
    launch_serve,
    wait_listening,
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def _metric(text: str, name: str, **labels: str) -> float | None:
    """Return the value of one sample in Prometheus text, None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)\{([^}]*)\} (\S+)$", line)
        if match and match[1] == name:
            got = ",".join(sorted(match[2].split(",")))
            if got == want:
                return float(match[3])
    return None


def _metrics_when(port: int, name: str, value: float, within_s: float, **labels: str) -> str:
    deadline = time.monotonic() + within_s
    text = ""
    while time.monotonic() < deadline:
        text = http_get(port, "/metrics")[1].decode()
        if _metric(text, name, **labels) == value:
            return text
        time.sleep(0.2)
    pytest.fail(f"{name}{labels} never became {value}:\n{text[-3000:]}")


@pytest.mark.engine
def test_a_failed_pool_and_engine_crashes_show_in_metrics(tmp_path: Path) -> None:
    port = free_port()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    cfg = _write(
        tmp_path,
        f"""allow_cpu_inference = true
[server]
bind = "127.0.0.1:{port}"
[[pools]]
id = "bad"
engine = "llamacpp"
model = "file:{broken}"
device_mask = "cpu"
[[pools]]
id = "m0"
engine = "mock"
model = "mock-a"
mock_tokens_per_s = 500
mock_crash_after_tokens = 2
""",
    )
    proc = launch_serve(cfg, clean_env(tmp_path))
    try:
        wait_listening(proc, port)
        text = _metrics_when(port, "pool_state", 1.0, 60, pool_id="bad", state="failed")
        assert _metric(text, "pool_ready", pool_id="bad") == 0.0
        assert _metric(text, "pool_state", pool_id="bad", state="ready") == 0.0
        assert _metric(text, "pool_ready", pool_id="m0") == 1.0
        body = json.dumps({"prompt": "hi", "max_tokens": 5, "model_ref": "mock-a"}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/tasks",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            task = json.loads(resp.read())["task_id"]
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/v1/tasks/{task}/stream", timeout=10
        ) as resp:
            assert b"event: error" in resp.read()
        text = _metrics_when(port, "pool_crashes_total", 1.0, 10, pool_id="m0")
        assert _metric(text, "pool_restarts_total", pool_id="m0") == 1.0
    finally:
        end_process(proc)
