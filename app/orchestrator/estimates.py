"""Pure estimates and derivations shared by the facade, admission path and dispatcher.

Request sizing, matching, the start-time and on-time estimates, building the
engine request and the capabilities. No logging, no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from app.orchestrator.contracts import (
    MAX_TOKENS_OUT,
    Capabilities,
    EngineCapability,
    RateLimits,
    TaskRequest,
    Workload,
)
from app.orchestrator.placement import serves_model_ref
from app.orchestrator.pools import PoolRuntime
from app.orchestrator.ports import EngineRequest
from app.orchestrator.queues import FullPolicy
from app.orchestrator.tasks import TaskRecord


def on_time_probability(predicted_ms: float, deadline_ms: float) -> float:
    """Return P(finish <= deadline) for a normal with mean ``predicted_ms`` and a
    25% coefficient of variation."""
    sigma = max(1.0, 0.25 * predicted_ms)
    z = (deadline_ms - predicted_ms) / sigma
    return round(0.5 * (1 + math.erf(z / math.sqrt(2))), 4)


def matches(model: str, pool_id: str, engine: str, req: TaskRequest) -> bool:
    """Return True when a pool serving ``model`` on ``engine`` fits the request's
    engine and model_ref filters."""
    if req.engine is not None and req.engine != engine:
        return False
    return serves_model_ref(req.model_ref, model, pool_id)


def engine_request(rec: TaskRecord) -> EngineRequest:
    """Return the engine-facing request of a task record."""
    r = rec.request
    return EngineRequest(
        prompt=r.prompt,
        messages=r.messages,
        max_tokens=r.max_tokens,
        temperature=r.temperature,
        seed=r.seed,
        stop=tuple(r.stop),
        correlation_id=rec.correlation_id,
        session_id=r.session_id,
        options=r.sampling.engine_fields() if r.sampling is not None else {},
    )


def predict_start_ms(pool: PoolRuntime, position: int) -> int:
    """Return the predicted wait before a task at queue ``position`` starts."""
    slots = max(1, pool.engine.descriptor.slots)
    if position == 0 and pool.busy < slots:
        return 0
    per_task = pool.perf.service_ms if pool.perf.service_ms is not None else 1000.0
    return int(math.ceil((position + 1) / slots) * per_task)


def build_capabilities(
    pools: Iterable[PoolRuntime],
    queue_capacity: int,
    full_policy: FullPolicy,
    features: dict[str, bool] | None,
) -> Capabilities:
    """Return engines (merged per engine name), rate limits and feature flags."""
    by_engine: dict[str, EngineCapability] = {}
    for pool in pools:
        d = pool.engine.descriptor
        cur = by_engine.get(d.engine)
        ctx_max = max(d.ctx, cur.ctx_max if cur else 0)
        by_engine[d.engine] = EngineCapability(
            engine=d.engine,
            engine_version=d.engine_version,
            ctx_max=ctx_max,
            supported_workloads=[Workload.COMPLETION],
            max_tokens_out=min(ctx_max, MAX_TOKENS_OUT),
            workloads=[Workload.COMPLETION],
            concurrency=d.slots + (cur.concurrency if cur else 0),
        )
    return Capabilities(
        engines=[by_engine[k] for k in sorted(by_engine)],
        rate_limits=RateLimits(queue_capacity=queue_capacity, full_policy=full_policy.value),
        features={"placement_overrides": True, **(features or {})},
    )
