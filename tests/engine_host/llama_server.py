"""A bare llama-server process for tests that talk to the engine directly."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from app.engine_host import process
from app.engine_host.llamacpp_launch import installed_llama_server


def llama_server_binary() -> str:
    """The llama-server the set-up installed; skips the test where there is none."""
    binary = installed_llama_server()
    if binary is None:
        pytest.skip("llama-server is not installed (make test installs it)")
    return binary


def post_json(url: str, body: dict[str, Any], timeout_s: float = 30.0) -> Any:
    """POST ``body`` as JSON to ``url``; return the decoded answer (blocking)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:
        return json.loads(resp.read())


@contextmanager
def llama_server(model: Path, *args: str, log: Path) -> Iterator[str]:
    """Run llama-server on ``model`` (CPU, loopback); yield its base URL once healthy."""
    port = process.free_loopback_port()
    argv = [llama_server_binary(), "-m", str(model), "--port", str(port), "-ngl", "0", *args]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        yield base
    finally:
        proc.kill()
        proc.wait()
