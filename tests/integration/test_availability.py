"""A flaky engine and a hostile network against a real ``llama-orch serve``."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support import (
    ROOT,
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


MOCK_POOL = """
[[pools]]
id = "m0"
engine = "mock"
model = "mock-a"
"""


def _nofile(soft: int, hard: int) -> Callable[[], None]:
    """Return a child-side hook that sets the open-file limit before exec."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


def _idle_connections(
    port: int, count: int, first: bytes = b"", timeout: float = 1.0
) -> list[socket.socket]:
    """Open up to ``count`` connections that send ``first`` (nothing by default) and wait."""
    socks = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except OSError:
            continue
        if first:
            sock.sendall(first)
        socks.append(sock)
    return socks


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def _answers(port: int, within_s: float) -> bool:
    """Return True once GET /v1/pools answers 200 within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get(port, "/v1/pools", timeout=1.0)[0] == 200:
                return True
        time.sleep(0.1)
    return False


def test_idle_connections_past_the_soft_fd_limit_do_not_stop_the_server(tmp_path: Path) -> None:
    """The soft open-file limit (here 256) is raised to the hard one at start."""
    port = free_port()
    cfg = _write(tmp_path, f'[server]\nbind = "127.0.0.1:{port}"\n{MOCK_POOL}')
    proc = launch_serve(cfg, clean_env(tmp_path), preexec_fn=_nofile(256, 4096))
    socks: list[socket.socket] = []
    try:
        wait_listening(proc, port)
        socks = _idle_connections(port, 400)
        assert len(socks) >= 300
        assert _answers(port, 5.0), "serve stopped answering with 400 idle connections"
    finally:
        _close_all(socks)
        end_process(proc)


def test_connections_without_a_request_head_are_closed(tmp_path: Path) -> None:
    """At a hard limit of 300 descriptors, silent and slow clients are cut after the timeout."""
    port = free_port()
    server = (
        f'bind = "127.0.0.1:{port}"\nrequest_head_timeout_s = 1.0\nmax_connections_per_peer = 0'
    )
    cfg = _write(tmp_path, f"[server]\n{server}\n{MOCK_POOL}")
    proc = launch_serve(cfg, clean_env(tmp_path), preexec_fn=_nofile(300, 300))
    socks: list[socket.socket] = []
    try:
        wait_listening(proc, port)
        started = time.monotonic()
        socks = _idle_connections(port, 200) + _idle_connections(
            port, 200, first=b"GET /v1/pools HTTP/1.1\r\nHost: localhost\r\n"
        )
        assert _answers(port, 10.0), "serve did not recover after the head timeout"
        silent = socks[0]
        silent.settimeout(5.0)
        assert silent.recv(100) == b"", "a silent connection should be closed by the server"
        assert time.monotonic() - started < 10.0
    finally:
        _close_all(socks)
        end_process(proc)


def test_one_peer_cannot_hold_more_than_its_share_of_connections(tmp_path: Path) -> None:
    port = free_port()
    cfg = _write(
        tmp_path,
        f'[server]\nbind = "127.0.0.1:{port}"\nmax_connections_per_peer = 20\n{MOCK_POOL}',
    )
    proc = launch_serve(cfg, clean_env(tmp_path))
    socks: list[socket.socket] = []
    try:
        wait_listening(proc, port)
        assert _answers(port, 5.0)
        socks = _idle_connections(port, 20)
        assert len(socks) == 20
        status, body = http_get(port, "/v1/pools")
        assert status == 503 and b"Too many open connections" in body
        socks[0].settimeout(0.3)
        with pytest.raises(TimeoutError):
            socks[0].recv(100)  # the ones within the cap stay open
        _close_all(socks)
        assert _answers(port, 5.0)
    finally:
        _close_all(socks)
        end_process(proc)


def test_failed_accepts_make_one_rate_limited_log_line(tmp_path: Path) -> None:
    """At descriptor exhaustion, stderr gets one line naming the fix, not a traceback each."""
    port = free_port()
    server = (
        f'bind = "127.0.0.1:{port}"\nmax_connections = 100000\nmax_connections_per_peer = 0\n'
        "request_head_timeout_s = 60.0"
    )
    cfg = _write(tmp_path, f"[server]\n{server}\n{MOCK_POOL}")
    proc = launch_serve(cfg, clean_env(tmp_path), preexec_fn=_nofile(128, 128))
    socks: list[socket.socket] = []
    try:
        wait_listening(proc, port)
        started = time.monotonic()
        socks = _idle_connections(port, 300, timeout=0.2)
        time.sleep(2.0)
        elapsed = time.monotonic() - started
    finally:
        _close_all(socks)
        err = end_process(proc)
    assert "Traceback" not in err
    lines = err.count("cannot accept new connections")
    assert 1 <= lines <= elapsed / 10 + 1, err[-2000:]
    assert "ulimit -n" in err
    assert len(err) < 20_000


SLOW_POOL = """
[[pools]]
id = "m0"
engine = "mock"
model = "mock-a"
mock_tokens_per_s = 5
"""


def _start_long_stream(port: int) -> tuple[threading.Thread, list[bytes]]:
    """Submit a long task and read its stream in a thread; return the thread and its bytes."""
    body = json.dumps({"prompt": "hi", "max_tokens": 1000}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/tasks", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        task = json.loads(resp.read())["task_id"]
    got: list[bytes] = []

    def read() -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            url = f"http://127.0.0.1:{port}/v1/tasks/{task}/stream"
            with urllib.request.urlopen(url, timeout=30) as resp:
                while chunk := resp.read1(4096):
                    got.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 5
    while b"event: token" not in b"".join(got) and time.monotonic() < deadline:
        time.sleep(0.05)
    return reader, got


@pytest.mark.parametrize("command", ["serve", "gui"])
def test_a_second_stop_signal_stops_at_once(tmp_path: Path, command: str) -> None:
    port = free_port()
    cfg = _write(tmp_path, f'[server]\nbind = "127.0.0.1:{port}"\n{SLOW_POOL}')
    env = clean_env(tmp_path, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", command, "--config", str(cfg)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(proc, port, within_s=60)
        assert _answers(port, 30.0)
        reader, got = _start_long_stream(port)
        assert b"event: token" in b"".join(got)
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None, "the first signal drains (the task is still running)"
        proc.send_signal(signal.SIGINT)
        second = time.monotonic()
        proc.wait(timeout=10)
        assert time.monotonic() - second < 3.0
        reader.join(5)
        assert b"event: error" in b"".join(got), "the live stream gets an error frame"
    finally:
        err = end_process(proc)
    assert "Traceback" not in err, err[-3000:]


def test_a_pool_without_its_model_file_does_not_stop_the_others(tmp_path: Path) -> None:
    port = free_port()
    missing = tmp_path / "models" / "gone.gguf"
    cfg = _write(
        tmp_path,
        f"""allow_cpu_inference = true
[server]
bind = "127.0.0.1:{port}"
[[pools]]
id = "gone"
engine = "llamacpp"
model = "file:{missing}"
device_mask = "cpu"
{MOCK_POOL}""",
    )
    proc = launch_serve(cfg, clean_env(tmp_path))
    try:
        wait_listening(proc, port)
        assert _answers(port, 10.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pools = {p["pool_id"]: p for p in json.loads(http_get(port, "/v1/pools")[1])}
            if pools["m0"]["ready"] and pools["gone"]["state"] == "needs_model":
                break
            time.sleep(0.1)
        assert pools["gone"]["state"] == "needs_model", pools["gone"]
        assert str(missing) in pools["gone"]["detail"]
        assert pools["m0"]["ready"]
        body = json.dumps({"prompt": "hi", "max_tokens": 3, "model_ref": "mock-a"}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/tasks",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read())["pool_id"] == "m0"
    finally:
        err = end_process(proc)
    assert str(missing) in err, "serve names the missing file at start"
