"""The core's shared mutable state: pools, task records, sessions, observers.

One ``CoreState`` is built by the Orchestrator facade and handed to its
collaborators (the admission path and the dispatcher). Everything here runs on
the orchestrator's loop, so no locking is needed.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.orchestrator import pools as poolmod
from app.orchestrator.contracts import PoolView, Priority
from app.orchestrator.decisions import DecisionBook
from app.orchestrator.errors import NotFound
from app.orchestrator.events import CoreEvent, PoolChanged, TaskChanged
from app.orchestrator.metrics import OrchMetrics
from app.orchestrator.pools import PoolRuntime
from app.orchestrator.ports import Clock, EngineControl, GpuProbe
from app.orchestrator.queues import FullPolicy
from app.orchestrator.sessions import BudgetLimits, SessionStore
from app.orchestrator.tasklog import log
from app.orchestrator.tasks import TaskRecord

Observer = Callable[[CoreEvent], None]


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    """Tunables of the core (built from the [admission], [server], [sessions] config)."""

    queue_capacity: int = 16
    full_policy: FullPolicy = FullPolicy.REJECT
    channel_cap: int = 32
    unopened_stream_timeout_s: float = 30.0
    stream_start_grace_s: float = 0.5
    housekeeping_interval_s: float = 1.0
    metrics_interval_s: float = 1.0
    session_ttl_s: float = 600.0
    session_max_turns: int = 8
    budgets: BudgetLimits = field(default_factory=BudgetLimits)
    history: int = 500
    decisions_kept: int = 256


class CoreState:
    """Pools, live and finished task records, sessions, decisions and counters."""

    def __init__(
        self,
        engines: Sequence[EngineControl],
        config: OrchestratorConfig,
        clock: Clock,
        gpu_probe: GpuProbe,
        metrics: OrchMetrics,
    ) -> None:
        """Build the state for ``engines``; raises ValueError on a duplicate pool id."""
        self.config = config
        self.clock = clock
        self.gpu_probe = gpu_probe
        self.metrics = metrics
        self.pools = _build_pools(engines, config)
        self.live: dict[str, TaskRecord] = {}
        self.done: OrderedDict[str, TaskRecord] = OrderedDict()
        self.sessions = SessionStore(config.session_ttl_s, config.session_max_turns, config.budgets)
        self.decisions = DecisionBook(config.decisions_kept)
        self.observers: list[Observer] = []
        self.closing = False
        self.ttfts: deque[int] = deque(maxlen=512)
        self.counters = {"started": 0, "rejected": 0, "canceled": 0, "enqueued": 0}

    def record(self, task_id: str) -> TaskRecord:
        """Return the live or finished record of ``task_id``; raises NotFound."""
        rec = self.live.get(task_id) or self.done.get(task_id)
        if rec is None:
            raise NotFound("task", task_id)
        return rec

    def pool(self, pool_id: str) -> PoolRuntime:
        """Return the runtime of ``pool_id``; raises NotFound."""
        pool = self.pools.get(pool_id)
        if pool is None:
            raise NotFound("pool", pool_id)
        return pool

    def pool_view(self, pool_id: str) -> PoolView:
        """Return one pool's view; raises NotFound."""
        return poolmod.view(self.pool(pool_id), self.gpu_probe.snapshot())

    def notify(self, event: CoreEvent) -> None:
        """Call every observer with ``event``; an observer's error is logged."""
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                log.exception("observer failed")

    def notify_task(self, rec: TaskRecord) -> None:
        """Tell observers about ``rec``'s current view (built only when someone listens)."""
        if self.observers:
            position = self.pools[rec.pool_id].queues.position(rec.task_id)
            self.notify(TaskChanged(rec.view(position)))

    def notify_pool(self, pool_id: str) -> None:
        """Tell observers about the pool's current view (built only when someone listens)."""
        if self.observers:
            self.notify(PoolChanged(self.pool_view(pool_id)))

    def update_queue_gauge(self, pool: PoolRuntime) -> None:
        """Publish ``pool``'s queue depths and slot usage to the metrics."""
        d, m = pool.engine.descriptor, self.metrics
        for prio in Priority:
            depth = m.child(m.queue_depth, d.engine, d.engine_version, d.pool_id, prio.value)
            depth.set(pool.queues.depth(prio))
        ratio = pool.busy / max(1, d.slots)
        m.child(m.kv_cache_usage_ratio, *m.identity(d)).set(ratio)


def _build_pools(
    engines: Sequence[EngineControl], config: OrchestratorConfig
) -> dict[str, PoolRuntime]:
    pools: dict[str, PoolRuntime] = {}
    for engine in engines:
        pid = engine.descriptor.pool_id
        if pid in pools:
            raise ValueError(f"duplicate pool id {pid!r}")
        pools[pid] = PoolRuntime.create(engine, config.queue_capacity, config.full_policy)
    return pools
