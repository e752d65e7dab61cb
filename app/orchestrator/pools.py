"""Per-pool runtime state held by the orchestrator: queues, busy slots, perf hints.

One ``PoolRuntime`` per pool, owned by the Orchestrator (all mutation happens on
its event loop). Snapshot and view builders are pure functions of that state.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.orchestrator.contracts import PoolView, Priority, QueueDepth
from app.orchestrator.device_mask import device_indices
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.placement import PoolSnapshot
from app.orchestrator.ports import EngineControl, GpuInventory
from app.orchestrator.queues import FullPolicy, PoolQueues

_ALPHA = 0.3


@dataclass(slots=True)
class PerfStats:
    """Online perf hints (EWMA) learned from finished tasks."""

    tokens_per_s: float | None = None
    first_token_ms: float | None = None
    service_ms: float | None = None
    tokens_out_total: int = 0

    def observe(self, tokens: int, decode_ms: float, ttft_ms: float | None) -> None:
        """Fold one finished task into the averages. Returns nothing; never blocks."""
        rate = decode_tokens_per_s(tokens, decode_ms)
        if tokens > 1 and rate is not None:
            self.tokens_per_s = _ewma(self.tokens_per_s, rate)
        if ttft_ms is not None:
            self.first_token_ms = _ewma(self.first_token_ms, ttft_ms)
        self.service_ms = _ewma(self.service_ms, decode_ms + (ttft_ms or 0.0))


def decode_tokens_per_s(tokens: int, decode_ms: float) -> float | None:
    """Return the decode speed of ``tokens`` produced in ``decode_ms`` (from the first
    token to the last); None when no decode time was measured. Pure."""
    return tokens * 1000.0 / decode_ms if decode_ms > 0 else None


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - _ALPHA) * old + _ALPHA * new


@dataclass(slots=True)
class PoolRuntime:
    """The orchestrator's mutable view of one pool."""

    engine: EngineControl
    queues: PoolQueues
    perf: PerfStats = field(default_factory=PerfStats)
    running: set[str] = field(default_factory=set)
    draining: bool = False
    drain_timer: asyncio.TimerHandle | None = None

    @classmethod
    def create(cls, engine: EngineControl, capacity: int, policy: FullPolicy) -> PoolRuntime:
        """Return a runtime with empty queues for ``engine``."""
        return cls(
            engine=engine,
            queues=PoolQueues(capacity, policy, pool_id=engine.descriptor.pool_id),
        )

    @property
    def pool_id(self) -> str:
        return self.engine.descriptor.pool_id

    @property
    def busy(self) -> int:
        return len(self.running)

    def stop_drain_timer(self) -> None:
        """Cancel the pending drain deadline, if any. Never blocks."""
        if self.drain_timer is not None:
            self.drain_timer.cancel()
            self.drain_timer = None

    def can_dispatch(self) -> bool:
        """Return True when the engine is ready and a slot is free."""
        state = self.engine.status.state
        return state is PoolState.READY and self.busy < self.engine.descriptor.slots


def pool_vram(mask: str, gpu: GpuInventory) -> tuple[int | None, int | None]:
    """Return (total, free) VRAM bytes over the mask's GPUs, None when unknown."""
    idx = set(device_indices(mask))
    gpus = [g for g in gpu.gpus if g.index in idx]
    if not gpus:
        return None, None
    totals = [g.vram_total_bytes for g in gpus]
    frees = [g.vram_free_bytes for g in gpus]
    total = sum(t for t in totals if t is not None) if any(t is not None for t in totals) else None
    free = sum(f for f in frees if f is not None) if any(f is not None for f in frees) else None
    return total, free


def pool_utilization(mask: str, gpu: GpuInventory) -> float | None:
    """Return the mean GPU utilization over the mask's GPUs, None when unknown."""
    idx = set(device_indices(mask))
    vals = [g.utilization_pct for g in gpu.gpus if g.index in idx and g.utilization_pct is not None]
    return sum(vals) / len(vals) if vals else None


def snapshot(pool: PoolRuntime, gpu: GpuInventory) -> PoolSnapshot:
    """Return the placement input for ``pool``."""
    d = pool.engine.descriptor
    st = pool.engine.status
    total, free = pool_vram(d.device_mask, gpu)
    if total is None:
        total, free = st.vram_total_bytes, st.vram_free_bytes
    return PoolSnapshot(
        pool_id=d.pool_id,
        engine=d.engine,
        engine_version=d.engine_version,
        model=d.model,
        ctx=d.ctx,
        slots_total=d.slots,
        slots_free=max(0, d.slots - pool.busy),
        queued=len(pool.queues),
        vram_total_bytes=total,
        vram_free_bytes=free,
        device_mask=d.device_mask,
        compute_capability=d.compute_capability,
        ready=st.state is PoolState.READY,
        draining=pool.draining or st.state is PoolState.DRAINING,
        loading=st.state is PoolState.STARTING,
        perf_tokens_per_s=pool.perf.tokens_per_s,
        first_token_ms=pool.perf.first_token_ms,
        vram_need_bytes=vram_need(pool, gpu),
        features=d.features,
    )


def vram_need(pool: PoolRuntime, gpu: GpuInventory) -> int:
    """Return the VRAM ``pool`` still needs on its GPUs: its model's estimate less
    what its engine process already holds there (per NVML); 0 when unknown."""
    estimate = pool.engine.descriptor.vram_estimate_bytes
    if estimate <= 0:
        return 0
    pid = getattr(pool.engine, "engine_pid", None)
    idx = set(device_indices(pool.engine.descriptor.device_mask))
    held = sum(
        used for g in gpu.gpus if g.index in idx for p, used in g.process_vram_bytes if p == pid
    )
    return max(0, estimate - held)


def busy_slots(pool: PoolRuntime) -> int:
    """Return the pool's busy slots: the engine's own report (``engine_busy_slots``,
    e.g. llama-server's ``/slots``) when it has one, never fewer than the tasks we run."""
    reported = getattr(pool.engine, "engine_busy_slots", None)
    return max(pool.busy, reported) if isinstance(reported, int) else pool.busy


def view(pool: PoolRuntime, gpu: GpuInventory) -> PoolView:
    """Return the control-plane view of ``pool``."""
    d = pool.engine.descriptor
    st = pool.engine.status
    total, free = pool_vram(d.device_mask, gpu)
    util = pool_utilization(d.device_mask, gpu)
    return PoolView(
        pool_id=d.pool_id,
        engine=d.engine,
        engine_version=d.engine_version,
        model=d.model,
        ctx=d.ctx,
        device_mask=d.device_mask,
        demo=d.demo,
        state=st.state,
        detail=st.detail,
        live=st.state.live,
        ready=st.state is PoolState.READY and not pool.draining,
        draining=pool.draining or st.state is PoolState.DRAINING,
        slots_total=d.slots,
        slots_busy=busy_slots(pool),
        queue=QueueDepth(
            interactive=pool.queues.depth(Priority.INTERACTIVE),
            batch=pool.queues.depth(Priority.BATCH),
        ),
        vram_total_bytes=total if total is not None else st.vram_total_bytes,
        vram_free_bytes=free if free is not None else st.vram_free_bytes,
        gpu_utilization=util if util is not None else st.gpu_utilization,
        perf_tokens_per_s=pool.perf.tokens_per_s,
        first_token_ms=pool.perf.first_token_ms,
        crashes_recent=st.crashes_recent,
        features=sorted(d.features),
    )
