"""llama-server ``--parallel 4`` against llama-cpp-python's server on the demo model.

Aggregate tokens/s at 1, 2, 4 and 8 concurrent streams, straight to each engine
and through the orchestrator (a ``llamacpp`` pool for llama-server, an ``openai``
pool for llama-cpp-python's server), all in one run. llama-cpp-python is not
part of the set-up: it is installed on demand into ``bench/.venv-lcp`` (a
compile of about 10 minutes), and its rows say why when it cannot be.
``python -m bench.engines_bench`` runs this scenario alone.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench import client, procs

HERE = Path(__file__).resolve().parent
LCP_VENV = HERE / ".venv-lcp"
STREAMS = (1, 2, 4, 8)
MAX_TOKENS = 256
SLOTS = 4
INSTALL_TIMEOUT_S = 1800
REPEATS = 5


def llama_cpp_python() -> tuple[str | None, str]:
    """Return ``(python, note)``: an interpreter with ``llama_cpp.server``, or None and why.

    Installs llama-cpp-python[server] into ``bench/.venv-lcp`` when no interpreter
    has it. Blocks (up to ``INSTALL_TIMEOUT_S`` for the compile).
    """
    for python in (str(LCP_VENV / "bin" / "python"), sys.executable):
        if Path(python).exists() and _imports(python):
            return python, f"llama-cpp-python from {python}"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LCP_VENV)], check=True, timeout=120)
        pip = [str(LCP_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=off"}
        subprocess.run(
            [*pip, "llama-cpp-python[server]"], check=True, timeout=INSTALL_TIMEOUT_S, env=env
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"not measured: llama-cpp-python could not be installed ({type(exc).__name__})"
    python = str(LCP_VENV / "bin" / "python")
    return (
        (python, "llama-cpp-python installed into bench/.venv-lcp")
        if _imports(python)
        else (None, "not measured: llama-cpp-python installed but llama_cpp.server does not import")
    )


def _imports(python: str) -> bool:
    done = subprocess.run(
        [python, "-c", "import llama_cpp.server"], check=False, capture_output=True, timeout=60
    )
    return done.returncode == 0


def _spawn(
    name: str, argv: list[str], work: Path, url: str, env: dict[str, str] | None = None
) -> procs.Child:
    log_path = work / f"{name}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    return procs.Child(name, proc, url, log_path)


def start_llama_server(work: Path, model: Path) -> procs.Child:
    """Start llama-server with ``--parallel 4`` on the demo model (model id "paced")."""
    from app.engine_host.llamacpp_launch import installed_llama_server, locate_llama_server

    binary = locate_llama_server() or installed_llama_server()
    if binary is None:
        raise RuntimeError("llama-server is not installed (make run installs it)")
    port = procs.free_port()
    argv = [binary, "-m", str(model), "--port", str(port), "--alias", "paced", "-ngl", "0"]
    argv += ["--parallel", str(SLOTS), "-c", str(2048 * SLOTS), "--no-webui"]
    return _spawn("llama-server", argv, work, f"http://127.0.0.1:{port}/v1")


def start_python_server(work: Path, model: Path, python: str) -> procs.Child:
    """Start llama-cpp-python's OpenAI server on the demo model (one request at a time)."""
    port = procs.free_port()
    argv = [python, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "paced"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_gpu_layers", "0"]
    return _spawn("llama-cpp-python", argv, work, f"http://127.0.0.1:{port}/v1")


def start_llamacpp_pool(work: Path, model: Path) -> procs.Child:
    """Start ``llama-orch serve`` with one llamacpp pool of 4 slots on the demo model."""
    port = procs.free_port()
    config = work / "orch-llamacpp.toml"
    config.write_text(
        f'allow_cpu_inference = true\n[server]\nbind = "127.0.0.1:{port}"\n'
        f'[engines]\nlog_dir = "{work / "logs"}"\n[[pools]]\nid = "ls"\nengine = "llamacpp"\n'
        f'model = "file:{model}"\ndevice_mask = "cpu"\nslots = {SLOTS}\nctx = 2048\n'
    )
    env = {**os.environ, "XDG_STATE_HOME": str(work / "state"), "XDG_DATA_HOME": str(work / "data")}
    for var in ("BIND_ADDR", "ORCHD_ADDR", "AUTH_TOKEN", "AUTH_OPTIONAL"):
        env.pop(var, None)
    argv = [sys.executable, "-m", "app", "serve", "--config", str(config)]
    return _spawn("orch-llamacpp", argv, work, f"http://127.0.0.1:{port}", env)


async def aggregate(http: aiohttp.ClientSession, base_url: str, streams: int) -> dict[str, Any]:
    """Return tokens/s summed over ``streams`` concurrent streams to ``base_url``."""
    fn = client.openai_stream(base_url)
    results = await asyncio.gather(*(fn(http, MAX_TOKENS) for _ in range(streams)))
    ends = [r.arrivals[-1] for r in results if r.arrivals]
    tokens = sum(r.tokens for r in results)
    span = max(ends) - min(r.start for r in results) if ends else float("nan")
    errors = [r.error for r in results if r.error]
    return {"tokens": tokens, "seconds": span, "tokens_per_s": tokens / span, "errors": errors}


async def sweep(http: aiohttp.ClientSession, base_url: str) -> dict[str, Any]:
    """Return the aggregate figures at each concurrency of ``STREAMS`` (the median of
    ``REPEATS`` runs: the machine is shared, single runs are noisy)."""
    await aggregate(http, base_url, 1)  # warm
    out = {}
    for n in STREAMS:
        runs = sorted([await aggregate(http, base_url, n) for _ in range(REPEATS)],
                      key=lambda r: r["tokens_per_s"])  # fmt: skip
        out[str(n)] = runs[len(runs) // 2]
    return out


async def _measure(
    http: aiohttp.ClientSession, engine: procs.Child, orch: procs.Child
) -> dict[str, Any]:
    try:
        await procs.wait_engine_ready(http, engine)
        await procs.wait_pool_ready(http, orch)
        return {
            "direct": await sweep(http, engine.url),
            "through": await sweep(http, f"{orch.url}/v1"),
        }
    finally:
        orch.stop()
        engine.stop()


async def run(work: Path) -> dict[str, Any]:
    """Run both engines, direct and through the orchestrator; returns the figures."""
    from app.engine_host.demo_model import write_demo_model

    model = write_demo_model(work / "paced.gguf")
    figures: dict[str, Any] = {}
    async with client.new_session() as http:
        server = start_llama_server(work, model)
        figures["llama-server"] = await _measure(http, server, start_llamacpp_pool(work, model))
        python, note = await asyncio.to_thread(llama_cpp_python)
        figures["note"] = note
        if python is not None:
            engine = start_python_server(work, model, python)
            cfg = procs.OrchConfig(engine_url=engine.url, slots=1)
            orch = procs.start_orchestrator(work, cfg, name="orch-python")
            figures["llama-cpp-python"] = await _measure(http, engine, orch)
    return figures


def markdown(figures: dict[str, Any] | None) -> list[str]:
    """Return the RESULTS.md section of this scenario ([] when it did not run)."""
    if not figures:
        return []
    lines = [
        f"## llama-server --parallel {SLOTS} vs llama-cpp-python (demo model, CPU)",
        "",
        f"Aggregate tokens/s over N concurrent streams of {MAX_TOKENS} tokens (median of "
        f"{REPEATS} runs). *through* = via the orchestrator (a llamacpp pool of {SLOTS} slots for "
        "llama-server; an openai pool of 1 slot for llama-cpp-python's server, which decodes "
        "one request at a time and, direct, interrupts a running stream when another "
        f"arrives). {figures.get('note', '')}.",
        "",
        "| engine | path | " + " | ".join(f"{n} streams" for n in STREAMS) + " |",
        "|---|---|" + "---|" * len(STREAMS),
    ]
    for engine in ("llama-server", "llama-cpp-python"):
        for path in ("direct", "through"):
            row = figures.get(engine, {}).get(path)
            cells = [
                f"{row[str(n)]['tokens_per_s']:,.0f}" if row else "not measured" for n in STREAMS
            ]
            lines.append(f"| {engine} | {path} | " + " | ".join(cells) + " |")
    return [*lines, ""]


if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp(prefix="llama-orch-engines-"))
    result = asyncio.run(run(folder))
    for name in ("llama-server", "llama-cpp-python"):
        for path, rows in result.get(name, {}).items():
            for n, row in rows.items():
                print(name, path, n, row["tokens"], f"{row['seconds']:.2f}", row["errors"][:1])
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    text = "\n".join(markdown(result))
    (out / "RESULTS-engines.md").write_text(text)
    print(text)
