"""The processes a benchmark runs: paced engines and ``llama-orch serve``, and their costs.

Every process is a child of the benchmark, started on a free loopback port,
waited for until it answers, and stopped with SIGTERM (SIGKILL after a grace
period). CPU time and resident memory are read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_split(pid: int) -> tuple[float, float]:
    """Return the (user, system) CPU seconds used so far by process ``pid`` (all threads).

    Raises OSError when the process is gone. Reads /proc; never blocks long.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds used so far by process ``pid``. Raises OSError."""
    return sum(cpu_split(pid))


def rss_bytes(pid: int) -> int:
    """Return the resident memory (VmRSS) of process ``pid`` in bytes. Raises OSError."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS in /proc/{pid}/status")


@dataclass
class Child:
    """A started child process, its base URL and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.proc.pid

    def cpu(self) -> float:
        """Return the CPU seconds the process used so far."""
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        """Return the resident memory of the process in bytes."""
        return rss_bytes(self.pid)

    def check_alive(self) -> None:
        """Raise RuntimeError (with the end of its log) when the process has exited."""
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}:\n{tail}")

    def stop(self, grace_s: float = 10.0) -> None:
        """Send SIGTERM, wait up to ``grace_s``, then SIGKILL. Blocks until it exited."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(name: str, args: list[str], work: Path, env: dict[str, str] | None = None) -> Any:
    log_path = work / f"{name}.log"
    out = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd()
    )
    out.close()
    return proc, log_path


def start_paced_engine(
    work: Path, *, gap_ms: float, tokens: int = 100_000, name: str = "paced-engine"
) -> Child:
    """Start ``python -m bench.paced_engine`` on a free port; returns before it is ready."""
    port = free_port()
    args = ["-m", "bench.paced_engine", "--port", str(port), "--gap-ms", str(gap_ms)]
    proc, log_path = _spawn(name, [*args, "--tokens", str(tokens)], work)
    return Child(name, proc, f"http://127.0.0.1:{port}/v1", log_path)


def start_llamacpp_engine(work: Path, *, name: str = "llamacpp-engine") -> Child:
    """Start llama-cpp-python's OpenAI server on the generated demo model (model id "paced").

    Returns before it is ready. Blocks briefly to write the model.
    """
    from app.engine_host.demo_model import write_demo_model

    model = write_demo_model(work / "demo.gguf")
    port = free_port()
    args = ["-m", "llama_cpp.server", "--model", str(model), "--model_alias", "paced"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_gpu_layers", "0"]
    proc, log_path = _spawn(name, args, work)
    return Child(name, proc, f"http://127.0.0.1:{port}/v1", log_path)


@dataclass(frozen=True)
class OrchConfig:
    """The few settings a benchmark varies in the orchestrator's config."""

    engine_url: str
    slots: int = 256
    queue_capacity: int = 4096
    channel_cap: int = 32
    microbatch_ms: int = 0
    model: str = "paced"


def config_text(cfg: OrchConfig, port: int, work: Path) -> str:
    """Return a TOML config with one ``openai`` pool pointing at ``cfg.engine_url``."""
    return f"""\
[server]
bind = "127.0.0.1:{port}"
sse_channel_cap = {cfg.channel_cap}
sse_microbatch_ms = {cfg.microbatch_ms}

[admission]
queue_capacity = {cfg.queue_capacity}
full_policy = "reject"

[engines]
log_dir = "{work / "logs"}"
decode_timeout_s = 120

[[pools]]
id = "paced"
engine = "openai"
model = "{cfg.model}"
device_mask = "0"
slots = {cfg.slots}
ctx = 8192
base_url = "{cfg.engine_url}"
api_key_env = ""
"""


def start_orchestrator(work: Path, cfg: OrchConfig, name: str = "orchestrator") -> Child:
    """Start ``llama-orch serve`` with a config for ``cfg``; returns before it is ready.

    Runs ``python -m app serve --config <file>`` with the XDG config, state and
    data folders inside ``work`` so nothing outside it is touched.
    """
    port = free_port()
    path = work / f"{name}.toml"
    path.write_text(config_text(cfg, port, work))
    env = dict(os.environ)
    # data: the artifact store, which keeps a trace of every finished stream
    folders = (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_DATA_HOME", "data"),
    )
    for var, sub in folders:
        env[var] = str(work / sub)
    for var in ("BIND_ADDR", "ORCHD_ADDR", "AUTH_TOKEN", "AUTH_OPTIONAL", "TRUST_PROXY_AUTH"):
        env.pop(var, None)
    proc, log_path = _spawn(name, ["-m", "app", "serve", "--config", str(path)], work, env)
    return Child(name, proc, f"http://127.0.0.1:{port}", log_path, {"config": str(path)})


async def wait_engine_ready(http: aiohttp.ClientSession, child: Child) -> None:
    """Return once ``GET {url}/models`` answers 200. Raises RuntimeError on exit or timeout."""
    await _wait_until(http, child, f"{child.url}/models", lambda body: True)


async def wait_pool_ready(http: aiohttp.ClientSession, child: Child) -> None:
    """Return once ``GET /v1/pools`` shows every pool ready. Raises RuntimeError."""

    def ready(body: Any) -> bool:
        pools = body if isinstance(body, list) else body.get("pools", [])
        return bool(pools) and all(p.get("ready") for p in pools)

    await _wait_until(http, child, f"{child.url}/v1/pools", ready)


async def _wait_until(http: aiohttp.ClientSession, child: Child, url: str, done: Any) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            async with http.get(url) as resp:
                body = await resp.json(content_type=None)
                if resp.status == 200 and done(body):
                    return
                last = f"HTTP {resp.status}: {str(body)[:300]}"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            last = type(exc).__name__
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{child.name} not ready within {STARTUP_TIMEOUT_S:g} s ({url}: {last})")
