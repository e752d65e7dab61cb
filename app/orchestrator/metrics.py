"""The metric names and labels of the contract (prometheus-client collectors).

Each Orchestrator owns one ``OrchMetrics`` with its own registry, so several
orchestrators (tests, reloads) never collide. Labels come only from bounded
sets (pool ids, engines, priorities, reasons) and never from task ids. The
per-token path does not touch these: counts are added once per task.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from app.orchestrator.lifecycle import PoolState
from app.orchestrator.ports import PoolDescriptor, PoolStatus

REPLICA_ID = "r0"
"""Each pool runs one engine: its only replica."""
IDENTITY = ("engine", "engine_version", "pool_id", "replica_id")
"""The identity labels of the contract's per-pool series."""
PRIORITY_LABELS = ("engine", "engine_version", "pool_id", "priority")
PLACEMENT_OUTCOMES = ("assigned", "refused", "no_capacity")
"""Values of placement_decisions_total{outcome}: queued, refused by the chosen pool's
queue or deadline check, or no feasible pool."""

M = TypeVar("M", bound=MetricWrapperBase)

_LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


class OrchMetrics:
    """The collectors of one orchestrator, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.tasks_enqueued = Counter(
            "tasks_enqueued", "Tasks admitted to a queue.", (*IDENTITY, "priority"), registry=r
        )
        self.tasks_started = Counter(
            "tasks_started", "Tasks dispatched to an engine.", (*IDENTITY, "priority"), registry=r
        )
        self.tasks_canceled = Counter(
            "tasks_canceled", "Tasks canceled.", (*IDENTITY, "reason"), registry=r
        )
        self.tasks_rejected = Counter(
            "tasks_rejected",
            "Tasks refused at admission, by error code.",
            ["engine", "reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "queue_depth",
            "Tasks waiting per pool and priority.",
            ["engine", "engine_version", "pool_id", "priority"],
            registry=r,
        )
        self.tokens_in = Counter("tokens_in", "Prompt tokens accepted.", IDENTITY, registry=r)
        self.tokens_out = Counter("tokens_out", "Tokens streamed to clients.", IDENTITY, registry=r)
        self.gpu_utilization = Gauge(
            "gpu_utilization",
            "GPU utilization (0-100), per pool on the device (empty pool labels: no pool).",
            (*IDENTITY, "device"),
            registry=r,
        )
        self.vram_used_bytes = Gauge(
            "vram_used_bytes",
            "VRAM in use, per pool on the device (empty pool labels: no pool).",
            (*IDENTITY, "device"),
            registry=r,
        )
        self.kv_cache_usage_ratio = Gauge(
            "kv_cache_usage_ratio", "Busy slots / slots per pool.", IDENTITY, registry=r
        )
        self.latency_first_token_ms = Histogram(
            "latency_first_token_ms",
            "Time from admission to the first token (ms), queue wait included.",
            PRIORITY_LABELS,
            buckets=_LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.latency_decode_ms = Histogram(
            "latency_decode_ms",
            "Time from the first token to the end of a task (ms).",
            PRIORITY_LABELS,
            buckets=_LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.admission_backpressure_events = Counter(
            "admission_backpressure_events",
            "Queue-full refusals and evictions.",
            ["engine", "policy"],
            registry=r,
        )
        self.placement_decisions = Counter(
            "placement_decisions",
            "Placement decisions.",
            ["outcome", "pinned", "fallback"],
            registry=r,
        )
        self.catalog_verifications = Counter(
            "catalog_verifications",
            "Catalog model verifications (digest and GGUF checks).",
            ["result", "reason", "engine"],
            registry=r,
        )
        self.model_state = Gauge(
            "model_state",
            "1 for a catalog model's current state.",
            ["model_id", "state"],
            registry=r,
        )
        self.pool_state = Gauge(
            "pool_state",
            "1 for the pool's current supervision state, 0 for the others.",
            ["pool_id", "state"],
            registry=r,
        )
        self.pool_ready = Gauge(
            "pool_ready", "1 while the pool serves, else 0.", ["pool_id"], registry=r
        )
        self.pool_crashes_recent = Gauge(
            "pool_crashes_recent",
            "Engine crashes inside the restart window.",
            ["pool_id"],
            registry=r,
        )
        self.pool_crashes = Counter(
            "pool_crashes",
            "Engine crashes and hangs (killed) since start.",
            ["pool_id"],
            registry=r,
        )
        self.pool_restarts = Counter(
            "pool_restarts", "Automatic engine restarts since start.", ["pool_id"], registry=r
        )
        self._pool_totals: dict[str, tuple[int, int]] = {}
        self._children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
        self.placement_candidates_considered = Gauge(
            "placement_candidates_considered",
            "Pools considered by the latest placement decision.",
            registry=r,
        )

    def child(self, metric: M, *labels: str) -> M:
        """Return ``metric.labels(*labels)``, looked up once per label set and kept (the
        per-task calls then cost one dict lookup). For the collectors of this object,
        whose children are never removed. Never blocks."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found  # type: ignore[return-value]

    @staticmethod
    def identity(d: PoolDescriptor) -> tuple[str, str, str, str]:
        """Return the identity label values (engine, version, pool, replica) of a pool."""
        return (d.engine, d.engine_version, d.pool_id, REPLICA_ID)

    def observe_pool(self, pool_id: str, status: PoolStatus) -> None:
        """Publish a pool's state, readiness, crashes and restarts (once per status change)."""
        for state in PoolState:
            self.pool_state.labels(pool_id, state.value).set(1 if state is status.state else 0)
        self.pool_ready.labels(pool_id).set(1 if status.state is PoolState.READY else 0)
        self.pool_crashes_recent.labels(pool_id).set(status.crashes_recent)
        crashes, restarts = self._pool_totals.get(pool_id, (0, 0))
        if status.crashes_total > crashes:
            self.pool_crashes.labels(pool_id).inc(status.crashes_total - crashes)
        if status.restarts_total > restarts:
            self.pool_restarts.labels(pool_id).inc(status.restarts_total - restarts)
        self._pool_totals[pool_id] = (
            max(crashes, status.crashes_total),
            max(restarts, status.restarts_total),
        )
