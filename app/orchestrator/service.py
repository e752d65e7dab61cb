"""The Orchestrator facade used by app.api and app.ui.

It owns the core's shared state (pools' queues, task records, sessions) and two
collaborators: the admission path (``admission.Admitter``) and the dispatcher
(``dispatch.Dispatcher``), which runs every dispatched task in one asyncio task
(its runner) and alone ends task records. Deciding is delegated to the pure
modules (admission, placement, sessions); acting goes through the EngineControl
port. All methods must be called on the orchestrator's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from app.orchestrator import pools as poolmod
from app.orchestrator.admission import Admitter
from app.orchestrator.contracts import (
    AdmissionResponse,
    Capabilities,
    DecisionRecord,
    ErrorCode,
    PoolView,
    ReloadResult,
    SessionInfo,
    TaskRequest,
    TaskView,
)
from app.orchestrator.dispatch import Dispatcher
from app.orchestrator.errors import Conflict, NotFound
from app.orchestrator.estimates import build_capabilities, on_time_probability
from app.orchestrator.events import EventChannel, TaskEvent
from app.orchestrator.housekeeping import Housekeeper
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.metrics import OrchMetrics
from app.orchestrator.ports import (
    Clock,
    EngineControl,
    EngineError,
    EngineLog,
    GpuInventory,
    GpuProbe,
    PoolStatus,
    SystemClock,
)
from app.orchestrator.queues import FullPolicy
from app.orchestrator.state import CoreState, Observer, OrchestratorConfig

__all__ = ["Observer", "Orchestrator", "OrchestratorConfig", "StreamHandle", "on_time_probability"]

_NO_GPU = GpuInventory(gpus=(), at=0.0)


@dataclass(frozen=True, slots=True)
class StreamHandle:
    """A reader's hold on one task's events; ``next`` returns None after the end.
    ``tokens_in`` is the task's prompt estimate (what usage reports)."""

    task_id: str
    correlation_id: str
    pool_id: str
    session_id: str | None
    channel: EventChannel
    tokens_in: int = 0

    async def next(self) -> TaskEvent | None:
        """Return the next event (awaits); None after the terminal one. Cancel-safe."""
        return await self.channel.get()


class _NullProbe:
    def snapshot(self) -> GpuInventory:
        return _NO_GPU


class Orchestrator:
    """The facade: submit, stream, cancel, inspect, drain, reload, observe."""

    def __init__(
        self,
        engines: Sequence[EngineControl],
        config: OrchestratorConfig | None = None,
        *,
        clock: Clock | None = None,
        gpu_probe: GpuProbe | None = None,
        metrics: OrchMetrics | None = None,
    ) -> None:
        """Build the core over ``engines``; raises ValueError on a duplicate pool id."""
        self._st = CoreState(
            engines,
            config or OrchestratorConfig(),
            clock or SystemClock(),
            gpu_probe or _NullProbe(),
            metrics or OrchMetrics(),
        )
        self._dispatcher = Dispatcher(self._st)
        self._admitter = Admitter(self._st, self._dispatcher)
        self._housekeeper = Housekeeper(self._st)

    # ---- read-only state (the core's internals stay inside) -------------------

    @property
    def config(self) -> OrchestratorConfig:
        """Return the tunables in force (immutable; change them with ``set_admission``)."""
        return self._st.config

    @property
    def clock(self) -> Clock:
        """Return the clock the core reads."""
        return self._st.clock

    @property
    def metrics(self) -> OrchMetrics:
        """Return the Prometheus metrics the core updates (for rendering /metrics)."""
        return self._st.metrics

    @property
    def counters(self) -> dict[str, int]:
        """Return a copy of the started / rejected / canceled / enqueued counters."""
        return dict(self._st.counters)

    # ---- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start every pool's engine and listen to its status. Awaits the launches."""
        for pool in self._st.pools.values():
            pool.engine.add_listener(self._listener(pool.pool_id))
            self._st.metrics.observe_pool(pool.pool_id, pool.engine.status)
        self._housekeeper.start()
        await asyncio.gather(*(p.engine.start() for p in self._st.pools.values()))

    def _listener(self, pool_id: str) -> Callable[[PoolStatus], None]:
        return lambda status: self._on_pool_status(pool_id, status)

    async def shutdown(self, deadline_s: float = 10.0) -> None:
        """Stop admitting, let running tasks finish until ``deadline_s``, cancel the
        rest with an ``error`` frame, then stop the engines. Awaits all of it."""
        st = self._st
        st.closing = True
        self._housekeeper.stop()
        self._dispatcher.fail_queued(None, "server shutting down")
        running = [r.runner for r in st.live.values() if r.runner and not r.runner.done()]
        if running and deadline_s > 0:
            await asyncio.wait(running, timeout=deadline_s)
        runners = [r.runner for r in st.live.values() if r.runner and not r.runner.done()]
        for rec in list(st.live.values()):
            self._dispatcher.fail(rec, ErrorCode.POOL_UNAVAILABLE, "server shutting down", True)
        for runner in runners:
            runner.cancel()
        if runners:
            await asyncio.wait(runners, timeout=5)
        await asyncio.gather(*(p.engine.stop() for p in st.pools.values()), return_exceptions=True)

    # ---- admission -----------------------------------------------------------

    def submit(
        self,
        req: TaskRequest,
        *,
        identity: str = "local",
        correlation_id: str | None = None,
        api: str = "orchqueue",
    ) -> AdmissionResponse:
        """Admit ``req`` into a pool's queue. Never blocks.

        Returns the AdmissionResponse. Raises InvalidParams, Conflict (duplicate
        task_id), OrchError ADMISSION_REJECT (guardrail, 400), POOL_UNAVAILABLE /
        POOL_UNREADY (503), QueueFull (429) or ShuttingDown (503).
        """
        return self._admitter.submit(req, identity=identity, correlation_id=correlation_id, api=api)

    # ---- streams and cancel ------------------------------------------------------

    def open_stream(self, task_id: str) -> StreamHandle:
        """Attach the one reader of ``task_id``'s events. Never blocks.

        Raises NotFound for an unknown id and Conflict for a second reader.
        """
        rec = self._st.record(task_id)
        if rec.reader_attached:
            raise Conflict(f"task {task_id} already has a stream reader")
        rec.reader_attached = True
        if rec.unopened_timer is not None:
            rec.unopened_timer.cancel()
            rec.unopened_timer = None
        rec.start_gate.set()
        sid = rec.request.session_id
        return StreamHandle(
            task_id, rec.correlation_id, rec.pool_id, sid, rec.channel, rec.tokens_in
        )

    async def stream(self, task_id: str) -> AsyncIterator[TaskEvent]:
        """Yield the task's events up to and including the terminal one."""
        handle = self.open_stream(task_id)
        while (event := await handle.next()) is not None:
            yield event

    def cancel(self, task_id: str) -> None:
        """Cancel ``task_id``: idempotent, race-free; raises NotFound. Never blocks.

        A queued task leaves its queue at once; a running one gets no further
        token after this returns and ends with ``end`` {finish_reason: canceled}.
        """
        self._dispatcher.cancel(self._st.record(task_id))

    # ---- inspection ----------------------------------------------------------------

    def task(self, task_id: str) -> TaskView:
        """Return the view of one task; raises NotFound."""
        rec = self._st.record(task_id)
        return rec.view(self._st.pools[rec.pool_id].queues.position(task_id))

    def tasks(self, limit: int = 200) -> list[TaskView]:
        """Return live tasks, then the most recent finished ones (newest first)."""
        st = self._st
        recs = list(st.live.values()) + list(reversed(st.done.values()))
        return [r.view(st.pools[r.pool_id].queues.position(r.task_id)) for r in recs[:limit]]

    def tokens_out_by_pool(self) -> dict[str, int]:
        """Return tokens streamed per pool since start, running tasks included."""
        out = {pid: p.perf.tokens_out_total for pid, p in self._st.pools.items()}
        for rec in self._st.live.values():
            out[rec.pool_id] += rec.tokens_out
        return out

    def live_task_count(self) -> int:
        """Return how many tasks are queued or running."""
        return len(self._st.live)

    def pool_ids(self) -> list[str]:
        return sorted(self._st.pools)

    def pool_view(self, pool_id: str) -> PoolView:
        """Return one pool's view; raises NotFound."""
        return self._st.pool_view(pool_id)

    async def pool_log(self, pool_id: str, tail_lines: int) -> tuple[str | None, list[str]]:
        """Return ``(log file, last lines)`` of the pool's engine; ``(None, [])`` for an
        engine without a log. Raises NotFound. Awaits a small file read."""
        engine = self._st.pool(pool_id).engine
        if not isinstance(engine, EngineLog):
            return None, []
        return str(engine.log_path), await engine.read_log(tail_lines)

    def pool_views(self) -> list[PoolView]:
        gpu = self._st.gpu_probe.snapshot()
        return [poolmod.view(self._st.pools[p], gpu) for p in sorted(self._st.pools)]

    def gpu_inventory(self) -> GpuInventory:
        return self._st.gpu_probe.snapshot()

    def recent_decisions(self, limit: int = 50) -> list[DecisionRecord]:
        return self._st.decisions.recent(limit)

    def decision_for(self, task_id: str) -> DecisionRecord | None:
        """Return the newest decision still kept about ``task_id``, or None. Never blocks."""
        return self._st.decisions.latest_for(task_id)

    def link_artifact(self, task_id: str, artifact_id: str) -> None:
        """Record ``artifact_id`` as the transcript artifact of ``task_id`` (a task no
        longer kept is skipped). Never blocks, never raises."""
        with contextlib.suppress(NotFound):
            self._st.record(task_id).artifact_id = artifact_id

    def recent_ttfts(self) -> list[int]:
        return list(self._st.ttfts)

    def session_count(self) -> int:
        """Return how many sessions are kept (expired ones go at the next housekeeping tick)."""
        return len(self._st.sessions)

    def session(self, session_id: str) -> SessionInfo:
        """Return a session's info; raises NotFound (also when expired)."""
        info = self._st.sessions.info(session_id, self.clock.monotonic())
        if info is None:
            raise NotFound("session", session_id)
        return info

    def delete_session(self, session_id: str) -> None:
        """Delete a session; raises NotFound."""
        if not self._st.sessions.delete(session_id):
            raise NotFound("session", session_id)

    def capabilities(self, features: dict[str, bool] | None = None) -> Capabilities:
        """Return engines, rate limits and feature flags."""
        c = self.config
        return build_capabilities(
            self._st.pools.values(), c.queue_capacity, c.full_policy, features
        )

    # ---- control -------------------------------------------------------------------

    def drain(self, pool_id: str, deadline_ms: int) -> None:
        """Stop admissions to ``pool_id``; queued and running work may finish until
        the deadline, then is canceled. A new drain replaces the deadline of an
        earlier one. Raises NotFound. Never blocks."""
        pool = self._st.pool(pool_id)
        pool.draining = True
        pool.stop_drain_timer()
        pool.drain_timer = asyncio.get_running_loop().call_later(
            deadline_ms / 1000, self._drain_deadline, pool_id
        )
        self._st.notify_pool(pool_id)

    def _drain_deadline(self, pool_id: str) -> None:
        pool = self._st.pools[pool_id]
        pool.drain_timer = None
        if pool.draining:
            self._dispatcher.cancel_pool(pool_id)

    def resume(self, pool_id: str) -> None:
        """Admit to ``pool_id`` again after a drain (its deadline no longer
        applies). Raises NotFound. Never blocks."""
        pool = self._st.pool(pool_id)
        pool.draining = False
        pool.stop_drain_timer()
        self._dispatcher.pump(pool)
        self._st.notify_pool(pool_id)

    async def reload(self, pool_id: str, model_ref: str) -> ReloadResult:
        """Swap the pool's model atomically; awaits the engine. Raises NotFound.

        On failure the old model keeps serving and ``ok`` is False.
        """
        pool = self._st.pool(pool_id)
        try:
            message = await pool.engine.reload(model_ref)
        except EngineError as exc:
            model = pool.engine.descriptor.model
            return ReloadResult(
                pool_id=pool_id,
                ok=False,
                model=model,
                message=f"{exc.message}; still serving {model}",
            )
        self._st.notify_pool(pool_id)
        return ReloadResult(
            pool_id=pool_id, ok=True, model=pool.engine.descriptor.model, message=message
        )

    async def restart(self, pool_id: str) -> None:
        """Restart the pool's engine. Raises NotFound; awaits the engine."""
        await self._st.pool(pool_id).engine.restart()

    def set_admission(self, capacity: int, policy: FullPolicy) -> None:
        """Apply new queue limits to every pool (queued items are kept)."""
        for pool in self._st.pools.values():
            pool.queues.capacity = capacity
            pool.queues.policy = policy
        self._st.config = dataclasses.replace(
            self._st.config, queue_capacity=capacity, full_policy=policy
        )

    def _on_pool_status(self, pool_id: str, status: PoolStatus) -> None:
        pool = self._st.pools[pool_id]
        self._st.metrics.observe_pool(pool_id, status)
        if status.state is PoolState.READY:
            self._dispatcher.pump(pool)
        elif status.state in (PoolState.FAILED, PoolState.NEEDS_MODEL):
            why = f"pool {pool_id} is {status.state.value}: {status.detail}"
            self._admitter.replace_queued(pool_id, why)
        self._st.notify_pool(pool_id)

    # ---- observers ------------------------------------------------------------------

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(kind, payload)`` on task, pool and decision changes
        (never per token). Returns a function that unsubscribes."""
        observers = self._st.observers
        observers.append(observer)
        return lambda: observers.remove(observer) if observer in observers else None
