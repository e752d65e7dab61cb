"""A flaky engine and a hostile network against a real ``llama-orch serve``."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
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
from aiohttp import web

from tests.integration.support import (
    ROOT,
    clean_env,
    end_process,
    free_port,
    http_get,
    launch_serve,
    wait_listening,
)
from tests.support.gguf_files import with_tensors


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
    broken = with_tensors(tmp_path, "broken.gguf", "llama")  # passes the checks, cannot load
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
        socks = _idle_connections(port, 260, timeout=0.05)
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


class _HugeLineEngine:
    """A remote OpenAI engine on loopback (its own thread and loop): ``model`` "huge"
    streams one 100 MB line, "fine" streams three tokens."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sent = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _HugeLineEngine:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/v1/completions", self._complete)
        runner = web.AppRunner(app, handler_cancellation=True)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "huge"}, {"id": "fine"}]})

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if body["model"] == "huge":
            await response.write(b"data: ")
            block = b"x" * (1 << 20)
            while self.sent < 100 * (1 << 20):
                await response.write(block)
                self.sent += len(block)
            return response
        for text in ("a", "b", "c"):
            frame = {"choices": [{"index": 0, "delta": {"content": text}}]}
            await response.write(f"data: {json.dumps(frame)}\n\n".encode())
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        return response


def _all_ready(port: int) -> bool:
    pools: list[dict[str, object]] = json.loads(http_get(port, "/v1/pools")[1])
    return all(p["ready"] for p in pools)


def _stream(port: int, body: dict[str, object], timeout: float = 30.0) -> bytes:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/tasks",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        task = json.loads(resp.read())["task_id"]
    url = f"http://127.0.0.1:{port}/v1/tasks/{task}/stream"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


def test_a_remote_engine_sending_a_huge_line_fails_only_that_task(tmp_path: Path) -> None:
    port = free_port()
    with _HugeLineEngine() as engine:
        pools = "".join(
            f'[[pools]]\nid = "{name}"\nengine = "openai"\nmodel = "{name}"\n'
            f'base_url = "http://127.0.0.1:{engine.port}/v1"\n\n'
            for name in ("huge", "fine")
        )
        cfg = _write(tmp_path, f'[server]\nbind = "127.0.0.1:{port}"\n\n{pools}')
        proc = launch_serve(cfg, clean_env(tmp_path))
        try:
            wait_listening(proc, port)
            deadline = time.monotonic() + 20
            while not _all_ready(port) and time.monotonic() < deadline:
                time.sleep(0.1)
            started = time.monotonic()
            huge = _stream(port, {"prompt": "x", "max_tokens": 5, "model_ref": "huge"})
            took = time.monotonic() - started
            assert b"event: error" in huge and b"over 4 MiB" in huge, huge[-500:]
            assert engine.sent < 50 * (1 << 20), "the stream must stop soon after the cap"
            fine = _stream(port, {"prompt": "x", "max_tokens": 5, "model_ref": "fine"})
            assert fine.count(b"event: token") == 3 and b"event: end" in fine
            print(f"huge line failed after {took:.2f} s, {engine.sent >> 20} MiB sent")
        finally:
            end_process(proc)


def _children(pid: int) -> list[int]:
    """Return the pids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _demo_pool_state(port: int) -> dict[str, object]:
    pools: list[dict[str, object]] = json.loads(http_get(port, "/v1/pools")[1])
    return next(p for p in pools if p["pool_id"] == "demo")


@pytest.mark.engine
def test_a_stopped_engine_is_found_by_the_health_probe_and_restarted(tmp_path: Path) -> None:
    from app.engine_host.demo_model import write_demo_model

    demo_model = write_demo_model(tmp_path / "demo.gguf")
    port = free_port()
    cfg = _write(
        tmp_path,
        f"""allow_cpu_inference = true
[server]
bind = "127.0.0.1:{port}"
[engines]
health_interval_s = 0.5
health_timeout_s = 1.0
[[pools]]
id = "demo"
engine = "llamacpp"
model = "file:{demo_model}"
device_mask = "cpu"
ctx = 512
demo = true
""",
    )
    proc = launch_serve(cfg, clean_env(tmp_path))
    stopped: int | None = None
    try:
        wait_listening(proc, port, within_s=60)
        deadline = time.monotonic() + 90
        while _demo_pool_state(port)["state"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.2)
        (stopped,) = _children(proc.pid)
        os.kill(stopped, signal.SIGSTOP)  # idle and silent: no task will notice
        deadline = time.monotonic() + 90
        seen = []
        while time.monotonic() < deadline:
            pool = _demo_pool_state(port)
            seen.append(pool["state"])
            if pool["state"] == "ready" and _children(proc.pid) not in ([], [stopped]):
                break
            time.sleep(0.2)
        assert "starting" in seen, seen
        assert _demo_pool_state(port)["state"] == "ready"
        assert stopped not in _children(proc.pid)
    finally:
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)
        end_process(proc)
