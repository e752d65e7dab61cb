"""The peers table of ``bench/RESULTS.md``: the bare relay, LiteLLM and llama-orch side by side.

Every figure comes from the same run on the same paced engine; the ratio columns
divide llama-orch's figure by the relay's (lower is better for costs and added
latency, higher for throughput).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Getter = Callable[[dict[str, Any]], Any]
OURS = ("orchqueue", "openai")
PEERS = ("relay", "litellm")

MEASURES: list[tuple[str, str, Getter]] = [
    ("added TTFT, 1 stream, p50", " ms", lambda f: f["single"]["added"]["ttft_p50_ms"]),
    ("added TTFT, 1 stream, p99", " ms", lambda f: f["single"]["added"]["ttft_p99_ms"]),
    (
        "CPU per forwarded token, 64 streams",
        " us",
        lambda f: f["concurrent"]["64"]["through"]["cpu_us_per_token"]["orchestrator"],
    ),
    (
        "CPU per forwarded token, 256 streams",
        " us",
        lambda f: f["concurrent"]["256"]["through"]["cpu_us_per_token"]["orchestrator"],
    ),
    (
        "throughput at 256 streams, ratio to direct",
        "",
        lambda f: f["concurrent"]["256"]["throughput_ratio"],
    ),
    (
        "added TTFT at 256 streams, p99",
        " ms",
        lambda f: f["concurrent"]["256"]["added"]["ttft_p99_ms"],
    ),
]


def _value(fig: dict[str, Any], name: str, get: Getter) -> float | None:
    part = fig.get(name)
    if part is None:
        part = fig.get("peers", {}).get(name)
    if not isinstance(part, dict):
        return None
    try:
        value = get(part)
    except (KeyError, TypeError):
        return None
    if _failed(part, get):
        return None
    return None if value is None or math.isnan(value) else float(value)


def _failed(part: dict[str, Any], get: Getter) -> bool:
    """Return True when the run behind ``get`` delivered no token (every stream failed)."""
    for streams, run in part.get("concurrent", {}).items():
        probe = {"concurrent": {streams: {"through": {"cpu_us_per_token": {"orchestrator": 1}}}}}
        try:
            get(probe)
        except (KeyError, TypeError):
            continue
        return not run["through"].get("tokens")
    return False


def _errors(fig: dict[str, Any], name: str) -> str:
    part = fig.get("peers", {}).get(name)
    if not isinstance(part, dict):
        return ""
    runs = [part.get("single", {}), *part.get("concurrent", {}).values()]
    failed = [r.get("through", r) for r in runs]
    errors = sum(int(f.get("errors") or 0) for f in failed)
    first = next((f.get("first_error") for f in failed if f.get("first_error")), None)
    return f"{name}: {errors} failed streams in this run (first: {first})" if errors else ""


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if not unit else f"{value:.2f}{unit}"


def _ratio(ours: float | None, relay: float | None) -> str:
    if ours is None or relay is None or relay == 0:
        return "n/a"
    return f"x{ours / relay:.2f}"


def peer_table(fig: dict[str, Any]) -> list[str]:
    """Return the markdown lines of the peers table (empty when the peers were not run)."""
    peers = fig.get("peers")
    if not isinstance(peers, dict):
        return []
    head = ["Measure", "bare relay", "LiteLLM", "llama-orch OrchQueue", "llama-orch OpenAI"]
    head += ["OrchQueue / relay", "OpenAI / relay"]
    lines = ["## Beside the peers (same run, same engine)", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, unit, get in MEASURES:
        values = {n: _value(fig, n, get) for n in (*PEERS, *OURS)}
        cells = [_cell(values[n], unit) for n in (*PEERS, *OURS)]
        cells += [_ratio(values[n], values["relay"]) for n in OURS]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    for name in PEERS:
        if isinstance(peers.get(name), str):
            lines += ["", f"{name}: {peers[name]}"]
        elif note := _errors(fig, name):
            lines += ["", note + "; its figures from runs without a token are n/a."]
    return [*lines, ""]
