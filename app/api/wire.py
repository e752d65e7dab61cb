"""Wire models that only the HTTP layer produces (the rest live in the core's contracts)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from app.orchestrator.contracts import PoolView, QueueDepth


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthErrorBody(_Wire):
    """The body of a 401 answer; ``hint`` says how to authenticate."""

    code: Literal["MISSING_TOKEN", "BAD_TOKEN"]
    message: str
    hint: str


class PoolHealthMetrics(_Wire):
    """Upstream's ``PoolHealth.metrics`` object: the pool's load and speed now."""

    queue_depth: int
    slots_busy: int
    slots_total: int
    kv_cache_usage_ratio: float
    tokens_per_s: float | None
    first_token_ms: float | None
    gpu_utilization: float | None
    vram_free_bytes: int | None
    crashes_recent: int

    @classmethod
    def of(cls, view: PoolView) -> PoolHealthMetrics:
        """Return the metrics of a pool view."""
        return cls(
            queue_depth=view.queue.interactive + view.queue.batch,
            slots_busy=view.slots_busy,
            slots_total=view.slots_total,
            kv_cache_usage_ratio=view.slots_busy / max(1, view.slots_total),
            tokens_per_s=view.perf_tokens_per_s,
            first_token_ms=view.first_token_ms,
            gpu_utilization=view.gpu_utilization,
            vram_free_bytes=view.vram_free_bytes,
            crashes_recent=view.crashes_recent,
        )


class PoolHealth(_Wire):
    """``GET /v1/pools/{pool_id}/health``: the flat fields and upstream's ``metrics``."""

    pool_id: str
    live: bool
    ready: bool
    draining: bool
    state: str
    detail: str
    queue: QueueDepth
    slots_busy: int
    slots_total: int
    vram_total_bytes: int | None
    vram_free_bytes: int | None
    gpu_utilization: float | None
    metrics: PoolHealthMetrics

    @classmethod
    def of(cls, view: PoolView) -> PoolHealth:
        """Return the health part of a pool view."""
        return cls(
            pool_id=view.pool_id,
            live=view.live,
            ready=view.ready,
            draining=view.draining,
            state=view.state,
            detail=view.detail,
            queue=view.queue,
            slots_busy=view.slots_busy,
            slots_total=view.slots_total,
            vram_total_bytes=view.vram_total_bytes,
            vram_free_bytes=view.vram_free_bytes,
            gpu_utilization=view.gpu_utilization,
            metrics=PoolHealthMetrics.of(view),
        )


class DrainAccepted(_Wire):
    """``POST /v1/pools/{pool_id}/drain`` -> 202."""

    pool_id: str
    draining: bool
    deadline_ms: int


class PoolLog(_Wire):
    """``GET /v1/pools/{pool_id}/log?tail=N``: the last lines of the pool's engine log."""

    pool_id: str
    log_file: str | None
    lines: list[str]
