"""Small helpers shared by the orchestrator's facade, admission path and dispatcher.

The functions here are pure (request sizing, matching, the on-time estimate,
building the engine request and the capabilities), except ``log_task`` and
``close_quietly`` which are the core's only task-log and stream-close effects.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from app.orchestrator.contracts import (
    Capabilities,
    EngineCapability,
    RateLimits,
    TaskRequest,
    Workload,
)
from app.orchestrator.pools import PoolRuntime
from app.orchestrator.ports import EngineRequest
from app.orchestrator.queues import FullPolicy
from app.orchestrator.tasks import TaskRecord

log = logging.getLogger("llama_orch.core")


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
    return req.model_ref is None or req.model_ref in (model, pool_id)


def prompt_chars(req: TaskRequest) -> int:
    """Return the character size of the request's prompt or chat messages."""
    if req.prompt is not None:
        return len(req.prompt)
    return sum(len(m.content) + 8 for m in req.messages or ())


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
        by_engine[d.engine] = EngineCapability(
            engine=d.engine,
            engine_version=d.engine_version,
            ctx_max=max(d.ctx, cur.ctx_max if cur else 0),
            workloads=[Workload.COMPLETION],
            concurrency=d.slots + (cur.concurrency if cur else 0),
        )
    return Capabilities(
        engines=[by_engine[k] for k in sorted(by_engine)],
        rate_limits=RateLimits(queue_capacity=queue_capacity, full_policy=full_policy.value),
        features={"placement_overrides": True, **(features or {})},
    )


async def close_quietly(stream: Any) -> None:
    """Close an engine stream, logging (at debug) instead of raising on failure."""
    try:
        await stream.aclose()
    except Exception:
        log.debug("engine stream close failed", exc_info=True)


def log_task(rec: TaskRecord, event: str, human: str) -> None:
    """Write one structured task-log line for ``rec``."""
    log.info(
        human,
        extra={
            "event": event,
            "human": human,
            "fields": {
                "job_id": rec.task_id,
                "session_id": rec.request.session_id,
                "engine": rec.engine,
                "engine_version": rec.engine_version,
                "pool_id": rec.pool_id,
                "replica_id": rec.pool_id,
                "queue_position": rec.queue_position_at_admission,
                "predicted_start_ms": rec.predicted_start_ms,
                "tokens_in": rec.tokens_in,
                "tokens_out": rec.tokens_out,
                "decode_time_ms": rec.decode_time_ms(),
                "correlation_id": rec.correlation_id,
                "identity": rec.identity,
            },
        },
    )
