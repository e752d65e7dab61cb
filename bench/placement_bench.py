"""Placement latency: p50 / p99 of ``decide`` over 16 pools.

Run with ``python -m bench.placement_bench``. The goal is a p99 of at most
200 microseconds on a 2-core machine.
"""

from __future__ import annotations

import random
import statistics
import time

from app.orchestrator.contracts import PlacementMode, PlacementOverrides, Priority
from app.orchestrator.placement import JobSpec, PlacementInput, PoolSnapshot, decide

POOLS = 16
ITERATIONS = 20_000
WARMUP = 500
GOAL_P99_US = 200.0
GIB = 1 << 30


def _pool(index: int, rng: random.Random) -> PoolSnapshot:
    slots = rng.randint(1, 4)
    hinted = index % 4 != 0
    return PoolSnapshot(
        pool_id=f"gpu{index:02d}",
        engine="llamacpp",
        engine_version="0.3.2",
        model="tinyllama" if index % 3 else "qwen",
        ctx=rng.choice([2048, 4096, 8192]),
        slots_total=slots,
        slots_free=rng.randint(0, slots),
        queued=rng.randint(0, 6),
        vram_total_bytes=24 * GIB,
        vram_free_bytes=rng.randint(1, 24) * GIB,
        device_mask=str(index % 8),
        compute_capability="8.9",
        ready=index % 7 != 6,
        draining=index == 5,
        perf_tokens_per_s=rng.uniform(20.0, 120.0) if hinted else None,
        first_token_ms=rng.uniform(20.0, 300.0) if hinted else None,
    )


def _inputs(rng: random.Random) -> list[PlacementInput]:
    """A few realistic inputs (auto, prefer, avoid) to cycle through."""
    pools = tuple(_pool(i, rng) for i in range(POOLS))
    variants = [
        PlacementOverrides(),
        PlacementOverrides(mode=PlacementMode.PREFER, prefer_pools=["gpu03", "gpu09"]),
        PlacementOverrides(avoid_pools=["gpu01", "gpu02"]),
    ]
    inputs = []
    for overrides in variants:
        job = JobSpec(
            priority=Priority.INTERACTIVE,
            engine="llamacpp",
            model_ref="tinyllama",
            required_ctx=1500,
            expected_tokens=256,
            est_kv_bytes=2 * GIB,
            session_pool_id="gpu04",
            overrides=overrides,
        )
        shuffled = list(pools)
        rng.shuffle(shuffled)
        inputs.append(PlacementInput(tuple(shuffled), job))
    return inputs


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def run(iterations: int = ITERATIONS) -> dict[str, float]:
    """Time ``decide``; returns pools, iterations, p50_us, p99_us, mean_us, max_us, goal.

    Blocks for the duration of the measurement (about a second).
    """
    inputs = _inputs(random.Random(7))
    for n in range(WARMUP):
        decide(inputs[n % len(inputs)])
    samples: list[float] = []
    clock = time.perf_counter_ns
    for n in range(iterations):
        inp = inputs[n % len(inputs)]
        start = clock()
        decide(inp)
        samples.append((clock() - start) / 1000.0)
    samples.sort()
    return {
        "pools": float(POOLS),
        "iterations": float(iterations),
        "p50_us": _percentile(samples, 0.50),
        "p99_us": _percentile(samples, 0.99),
        "mean_us": statistics.fmean(samples),
        "max_us": samples[-1],
        "goal_p99_us": GOAL_P99_US,
        "p99_vs_goal": _percentile(samples, 0.99) / GOAL_P99_US,
    }


def main() -> None:
    """Print the figures of ``run`` in one line each."""
    figures = run()
    print(f"placement decide over {POOLS} pools, {ITERATIONS} iterations")
    for name in ("p50_us", "p99_us", "mean_us", "max_us"):
        print(f"  {name:8s} {figures[name]:8.1f}")
    verdict = "meets" if figures["p99_us"] <= GOAL_P99_US else "MISSES"
    print(f"  p99 is {figures['p99_vs_goal']:.2f}x the {GOAL_P99_US:.0f} us goal ({verdict})")


if __name__ == "__main__":
    main()
