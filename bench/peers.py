"""The peers measured beside the orchestrator in the same run: the bare relay and LiteLLM.

The relay (``bench/relay.py``) is the floor: what any proxy costs. LiteLLM's
proxy is installed on demand into its own virtualenv under ``bench/.peers/``
(gitignored, installed once); when it cannot be installed the bench says why and
goes on without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import procs

HERE = Path(__file__).resolve().parent
LITELLM_VENV = HERE / ".peers" / "litellm"
LITELLM_SPEC = "litellm[proxy]"
INSTALL_TIMEOUT_S = 900.0


def start_relay(work: Path, engine_url: str) -> procs.Child:
    """Start the bare relay in front of ``engine_url`` (…/v1); returns before it is ready."""
    port = procs.free_port()
    args = ["-m", "bench.relay", "--port", str(port), "--upstream", engine_url]
    proc, log_path = procs._spawn("relay", args, work)
    return procs.Child("relay", proc, f"http://127.0.0.1:{port}/v1", log_path)


def litellm_binary() -> Path | str:
    """Return LiteLLM's ``litellm`` command, installing it first when missing, or why
    it cannot be had. Blocks for the install (minutes, once)."""
    if os.environ.get("BENCH_SKIP_LITELLM"):
        return "not measured: skipped (BENCH_SKIP_LITELLM is set)"
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    try:
        if not (LITELLM_VENV / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_SPEC]
        done = subprocess.run(pip, capture_output=True, timeout=INSTALL_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"not measured: LiteLLM could not be installed ({exc})"
    if done.returncode != 0 or not binary.exists():
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        return f"not measured: LiteLLM could not be installed ({last[:160]})"
    return binary


def start_litellm(work: Path, engine_url: str, binary: Path) -> procs.Child:
    """Start LiteLLM's proxy with one model ("paced") on ``engine_url``; returns at once."""
    port = procs.free_port()
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: paced\n"
        "    litellm_params:\n"
        "      model: openai/paced\n"
        f"      api_base: {engine_url}\n"
        "      api_key: none\n"
        "general_settings:\n"
        "  disable_spend_logs: true\n"
        "  dangerously_permit_weak_or_unset_master_key: true\n"  # loopback, bench only
    )
    log_path = work / "litellm.log"
    with log_path.open("wb") as out:
        cmd = [str(binary), "--config", str(config), "--port", str(port), "--host", "127.0.0.1"]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    return procs.Child("litellm", proc, f"http://127.0.0.1:{port}/v1", log_path)
