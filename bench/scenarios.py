"""The benchmark scenarios: each measures the direct engine and the orchestrator in one run.

Every scenario takes a running ``Rig`` (a paced engine, ``llama-orch serve``
in front of it, one client session) and returns a dict of raw figures. Token
counts stay moderate so each scenario ends within a minute or two on a
2-core machine, where the client, the orchestrator and the engine share the
cores.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import client, procs
from bench.client import StreamFn
from bench.stats import added, percentile, ratio, summarize

GAP_MS = 20.0
BURST_CAPACITY = 16


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does (``quick()`` for a fast smoke run)."""

    ttft_samples: int = 200
    gap_streams: int = 5
    gap_tokens: int = 100
    concurrent_tokens: int = 200
    short_tokens: int = 4
    warmup_streams: int = 500
    churn_streams: int = 2000
    churn_concurrency: int = 64
    bursts: int = 5

    @classmethod
    def quick(cls) -> Sizes:
        """Return sizes for a run of well under a minute (figures are rougher)."""
        return cls(
            ttft_samples=30,
            gap_streams=1,
            gap_tokens=30,
            concurrent_tokens=40,
            warmup_streams=50,
            churn_streams=200,
            bursts=1,
        )


@dataclass
class Rig:
    """The running processes of a scenario and the client session driving them."""

    http: aiohttp.ClientSession
    engine: procs.Child
    orch: procs.Child

    @property
    def direct(self) -> StreamFn:
        """Streams straight to the engine's OpenAI API."""
        return client.openai_stream(self.engine.url)

    @property
    def orchqueue(self) -> StreamFn:
        """Streams through the orchestrator's OrchQueue API (POST task, GET stream)."""
        return client.orchqueue_stream(self.orch.url)

    @property
    def openai(self) -> StreamFn:
        """Streams through the orchestrator's OpenAI-compatible API."""
        return client.openai_stream(f"{self.orch.url}/v1")


async def start_rig(work: Path, http: aiohttp.ClientSession, cfg: dict[str, Any]) -> Rig:
    """Start a paced engine and an orchestrator in front of it; return once both are ready.

    ``cfg`` holds OrchConfig fields other than ``engine_url`` and the engine's ``gap_ms``.
    Raises RuntimeError when either process fails to start.
    """
    settings = dict(cfg)
    gap = float(settings.pop("gap_ms", GAP_MS))
    name = str(settings.pop("name", "main"))
    if settings.pop("engine", "paced") == "llamacpp":
        engine = procs.start_llamacpp_engine(work, name=f"{name}-engine")
    else:
        engine = procs.start_paced_engine(work, gap_ms=gap, name=f"{name}-engine")
    orch = None
    try:
        await procs.wait_engine_ready(http, engine)
        orch_cfg = procs.OrchConfig(engine_url=engine.url, **settings)
        orch = procs.start_orchestrator(work, orch_cfg, name=f"{name}-orchestrator")
        await procs.wait_pool_ready(http, orch)
    except BaseException:
        if orch is not None:
            orch.stop()
        engine.stop()
        raise
    return Rig(http, engine, orch)


def stop_rig(rig: Rig) -> None:
    """Stop the orchestrator, then the engine. Blocks until both exited."""
    rig.orch.stop()
    rig.engine.stop()


async def openai_served(rig: Rig) -> bool:
    """Return True when the orchestrator answers ``POST /v1/chat/completions`` with a stream."""
    result = await rig.openai(rig.http, 2)
    return result.error is None and result.tokens == 2


# ---- 1. one stream ---------------------------------------------------------------


async def single_stream(rig: Rig, through: StreamFn, sizes: Sizes) -> dict[str, Any]:
    """TTFT (many 1-token streams) and inter-token gaps (a few long streams), one at a time."""
    out: dict[str, Any] = {}
    for path, fn in (("direct", rig.direct), ("through", through)):
        await client.run_sequential(rig.http, fn, 10, 2)  # warm connections and caches
        ttft = await client.run_sequential(rig.http, fn, sizes.ttft_samples, 1)
        gaps = await client.run_sequential(rig.http, fn, sizes.gap_streams, sizes.gap_tokens)
        first, paced = summarize(ttft), summarize(gaps)
        out[path] = {
            "ttft_p50_ms": first["ttft_p50_ms"],
            "ttft_p99_ms": first["ttft_p99_ms"],
            "gap_p50_ms": paced["gap_p50_ms"],
            "gap_p99_ms": paced["gap_p99_ms"],
            "errors": first["errors"] + paced["errors"],
            "first_error": first["first_error"] or paced["first_error"],
        }
    d, t = out["direct"], out["through"]
    out["added"] = {k: added(d, t, k) for k in ("ttft_p50_ms", "ttft_p99_ms", "gap_p50_ms")}
    out["added"]["gap_p99_ms"] = added(d, t, "gap_p99_ms")
    return out


# ---- 2. many streams (and the CPU cost of 3.) ----------------------------------------


async def concurrent(rig: Rig, through: StreamFn, streams: int, sizes: Sizes) -> dict[str, Any]:
    """``streams`` streams at once, direct then through; adds CPU per token of each process."""
    out: dict[str, Any] = {}
    for path, fn in (("direct", rig.direct), ("through", through)):
        await client.run_concurrent(rig.http, fn, min(streams, 16), 2)
        await asyncio.sleep(0.5)
        orch = procs.cpu_split(rig.orch.pid)
        cpu = {"engine": rig.engine.cpu(), "client": time.process_time()}
        results = await client.run_concurrent(rig.http, fn, streams, sizes.concurrent_tokens)
        figures = summarize(results)
        tokens = max(1, figures["tokens"])
        user, system = (b - a for a, b in zip(orch, procs.cpu_split(rig.orch.pid), strict=True))
        figures["cpu_us_per_token"] = {
            "orchestrator": (user + system) / tokens * 1e6,
            "orchestrator_user": user / tokens * 1e6,
            "orchestrator_system": system / tokens * 1e6,
            "engine": (rig.engine.cpu() - cpu["engine"]) / tokens * 1e6,
            "client": (time.process_time() - cpu["client"]) / tokens * 1e6,
        }
        out[path] = figures
    d, t = out["direct"], out["through"]
    out["throughput_ratio"] = ratio(d, t, "tokens_per_s")
    out["steady_throughput_ratio"] = ratio(d, t, "steady_tokens_per_s")
    out["added"] = {k: added(d, t, k) for k in ("ttft_p50_ms", "ttft_p99_ms", "gap_p99_ms")}
    return out


# ---- 3. resident memory per 1,000 streams ------------------------------------------------


async def memory_churn(rig: Rig, sizes: Sizes) -> dict[str, Any]:
    """Run many short streams through the orchestrator; returns RSS growth and CPU per stream."""
    fn = rig.orchqueue
    churn, width, short = sizes.churn_streams, sizes.churn_concurrency, sizes.short_tokens
    await client.run_pool(rig.http, fn, sizes.warmup_streams, width, short)
    rss = [rig.orch.rss()]
    cpu_before = rig.orch.cpu()
    errors = 0
    start = time.perf_counter()
    for _ in range(2):
        batch = await client.run_pool(rig.http, fn, churn, width, short)
        errors += sum(1 for r in batch if r.error is not None)
        rss.append(rig.orch.rss())
    elapsed = time.perf_counter() - start
    direct_start = time.perf_counter()
    await client.run_pool(rig.http, rig.direct, churn, width, short)
    direct_rate = churn / (time.perf_counter() - direct_start)
    per_k = [(rss[i + 1] - rss[i]) / (churn / 1000) / 1024 for i in range(2)]
    return {
        "streams": 2 * churn,
        "tokens_per_stream": short,
        "errors": errors,
        "rss_mib": [r / 2**20 for r in rss],
        "rss_growth_kib_per_1000_streams": per_k,
        "cpu_ms_per_stream": (rig.orch.cpu() - cpu_before) / (2 * churn) * 1000,
        "streams_per_s": 2 * churn / elapsed,
        "direct_streams_per_s": direct_rate,
        "concurrency": width,
    }


# ---- 5. admission under a burst ----------------------------------------------------------


async def _post_task(http: aiohttp.ClientSession, url: str) -> tuple[int, float, str | None]:
    body = {"prompt": client.PROMPT, "max_tokens": 1000}
    start = time.perf_counter()
    async with http.post(f"{url}/v1/tasks", json=body) as resp:
        answer = await resp.json(content_type=None)
    elapsed = (time.perf_counter() - start) * 1000
    task_id = answer.get("task_id") if resp.status < 300 else None
    return resp.status, elapsed, task_id


async def admission_burst(http: aiohttp.ClientSession, work: Path, sizes: Sizes) -> dict[str, Any]:
    """Bursts of 10x queue capacity at a slow one-slot pool; returns time-to-429 figures."""
    cfg = {"name": "burst", "gap_ms": 1000.0, "slots": 1, "queue_capacity": BURST_CAPACITY}
    rig = await start_rig(work, http, cfg)
    rejected: list[float] = []
    accepted: list[float] = []
    other: dict[int, int] = {}
    try:
        for _ in range(sizes.bursts):
            answers = await asyncio.gather(
                *(_post_task(http, rig.orch.url) for _ in range(10 * BURST_CAPACITY))
            )
            for status, ms, _ in answers:
                if status == 429:
                    rejected.append(ms)
                elif status < 300:
                    accepted.append(ms)
                else:
                    other[status] = other.get(status, 0) + 1
            await _cancel_all(http, rig.orch.url, [tid for *_, tid in answers if tid])
    finally:
        stop_rig(rig)
    return {
        "queue_capacity": BURST_CAPACITY,
        "burst": 10 * BURST_CAPACITY,
        "bursts": sizes.bursts,
        "rejected": len(rejected),
        "accepted": len(accepted),
        "other_statuses": {str(k): v for k, v in other.items()},
        "reject_p50_ms": percentile(rejected, 0.50),
        "reject_p99_ms": percentile(rejected, 0.99),
        "accept_p50_ms": percentile(accepted, 0.50),
        "accept_p99_ms": percentile(accepted, 0.99),
    }


async def _cancel_all(http: aiohttp.ClientSession, url: str, task_ids: list[str]) -> None:
    for task_id in task_ids:
        async with http.post(f"{url}/v1/tasks/{task_id}/cancel") as resp:
            await resp.read()
    await asyncio.sleep(0.2)
