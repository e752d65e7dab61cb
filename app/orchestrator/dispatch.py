"""The dispatcher: moves queued tasks onto free slots and owns every task's end.

``Dispatcher`` pops a pool's queues while it has free slots and runs each
dispatched task in one asyncio task (its runner) that forwards engine text to
the task's channel. It is the only place where a task record reaches a terminal
state (done, canceled, failed) and is retired to the history. All methods must
be called on the orchestrator's loop.
"""

from __future__ import annotations

import asyncio
from logging import DEBUG
from typing import Any

from app.orchestrator.contracts import ErrorCode, FinishReason
from app.orchestrator.deadlines import deadline_passed_message
from app.orchestrator.estimates import engine_request, on_time_probability
from app.orchestrator.events import (
    METRICS,
    STARTED,
    TOKEN,
    MetricsData,
    MetricsEvent,
    StartedEvent,
    TerminalEvent,
    TokenEvent,
)
from app.orchestrator.lifecycle import TaskState
from app.orchestrator.pools import PoolRuntime
from app.orchestrator.ports import EngineError
from app.orchestrator.state import CoreState
from app.orchestrator.tasklog import close_quietly, log, log_task
from app.orchestrator.tasks import TaskRecord

_ENGINE_REASONS = {"length": FinishReason.LENGTH, "tool_calls": FinishReason.TOOL_CALLS}
"""The engine finish reasons that are not a plain stop."""


class Dispatcher:
    """Dispatches, runs and ends tasks over the shared ``CoreState``."""

    def __init__(self, state: CoreState) -> None:
        self._st = state

    # ---- dispatch ------------------------------------------------------------

    def pump(self, pool: PoolRuntime) -> None:
        """Dispatch queued tasks while the pool has free slots. Never blocks."""
        while pool.can_dispatch():
            item = pool.queues.pop()
            if item is None:
                break
            rec = self._st.live.get(item.task_id)
            if rec is None or rec.state is not TaskState.QUEUED:
                continue
            self._dispatch(pool, rec)
        self._st.update_queue_gauge(pool)

    def _dispatch(self, pool: PoolRuntime, rec: TaskRecord) -> None:
        st = self._st
        rec.lifecycle.to(TaskState.DISPATCHED)
        rec.dispatched_mono = st.clock.monotonic()
        pool.running.add(rec.task_id)
        st.counters["started"] += 1
        identity = st.metrics.identity(pool.engine.descriptor)
        st.metrics.child(st.metrics.tasks_started, *identity, rec.request.priority.value).inc()
        if rec.request.session_id is not None:
            rec.kv_warm = st.sessions.warm_for(
                rec.request.session_id, pool.pool_id, rec.dispatched_mono
            )
        rec.channel.offer_unbounded(
            StartedEvent(
                STARTED,
                {
                    "queue_position": rec.queue_position_at_admission,
                    "predicted_start_ms": rec.predicted_start_ms,
                    "pool_id": pool.pool_id,
                    "correlation_id": rec.correlation_id,
                },
            )
        )
        rec.runner = asyncio.get_running_loop().create_task(
            self._run(pool, rec), name=f"task-{rec.task_id}"
        )
        # a done-callback, not `finally`: a runner canceled before it first ran
        # never executes its body, yet its slot must still be released.
        rec.runner.add_done_callback(lambda _t: self._after_run(pool, rec))
        log_task(rec, "dispatched", f"stream starting on {pool.pool_id}", DEBUG)
        st.notify_task(rec)

    async def _run(self, pool: PoolRuntime, rec: TaskRecord) -> None:
        """Own ``rec`` from dispatch to its terminal event."""
        stream = None
        try:
            await self._await_reader(rec)
            if rec.lifecycle.terminal:
                return
            stream = await pool.engine.open_stream(engine_request(rec))
            if rec.lifecycle.terminal:
                return
            rec.lifecycle.to(TaskState.STREAMING)
            note_kv_warmth(rec, stream)
            await self._forward(rec, stream)
            if note_kv_warmth(rec, stream) and rec.request.session_id is not None:
                # the engine's final word on a session turn's warmth, before `end`
                rec.channel.offer(MetricsEvent(METRICS, self._metrics_payload(rec)))
            if not rec.lifecycle.terminal:
                reason = _ENGINE_REASONS.get(stream.finish_reason or "", FinishReason.STOP)
                self._finish(
                    rec, TaskState.DONE, rec.end_event(reason, self._st.clock.monotonic()), reason
                )
        except EngineError as exc:
            self.fail(rec, exc.code, exc.message, exc.retriable)
        except asyncio.CancelledError:
            self.fail(rec, ErrorCode.INTERNAL, "task runner stopped", True)
        except Exception:
            log.exception("task runner failed", extra={"fields": {"job_id": rec.task_id}})
            self.fail(rec, ErrorCode.INTERNAL, "internal error while streaming", False)
        finally:
            if stream is not None:
                await close_quietly(stream)

    async def _await_reader(self, rec: TaskRecord) -> None:
        """Wait until the task's stream is opened or the start grace passes (awaits).

        No tokens are decoded for a reader who is not there yet.
        """
        grace = self._st.config.stream_start_grace_s
        if rec.reader_attached or grace <= 0:
            return
        # a timer, not asyncio.wait_for: one handle, and safe on qasync's loop
        gate = rec.start_gate
        timer = asyncio.get_running_loop().call_later(grace, gate.set)
        try:
            await gate.wait()
        finally:
            timer.cancel()

    async def _forward(self, rec: TaskRecord, stream: Any) -> None:
        """The per-token hot path: engine text -> channel. No logging, no models."""
        put = rec.channel.put
        mono = self._st.clock.monotonic
        interval = self._st.config.metrics_interval_s
        next_metrics = 0.0
        i = 0
        async for text in stream:
            if i == 0:
                rec.first_token_mono = mono()
                next_metrics = rec.first_token_mono + interval
            if text.__class__ is str:
                event = TokenEvent(TOKEN, {"t": text, "i": i})
            else:  # a Delta: tool-call fragments or logprobs ride along
                event = TokenEvent(TOKEN, {"t": str(text), "i": i, "x": text.extra})
            if not await put(event):
                return
            i += 1
            rec.tokens_out = i
            if interval > 0 and mono() >= next_metrics:
                next_metrics += interval
                rec.channel.offer(MetricsEvent(METRICS, self._metrics_payload(rec)))

    def _metrics_payload(self, rec: TaskRecord) -> MetricsData:
        st = self._st
        pool = st.pools[rec.pool_id]
        budgets = None
        if rec.request.session_id is not None:
            budgets = st.sessions.remaining(rec.request.session_id, st.clock.monotonic())
        return {
            "queue_depth": len(pool.queues),
            "on_time_probability": self._on_time_probability(rec, pool),
            "kv_warmth": rec.kv_warm,
            "tokens_budget_remaining": budgets.tokens_remaining if budgets else None,
            "time_budget_remaining_ms": budgets.time_remaining_ms if budgets else None,
            "cost_budget_remaining": budgets.cost_remaining if budgets else None,
        }

    def _on_time_probability(self, rec: TaskRecord, pool: PoolRuntime) -> float | None:
        deadline = rec.request.deadline_ms
        tps = pool.perf.tokens_per_s
        if deadline is None:
            return None
        elapsed_ms = (self._st.clock.monotonic() - rec.created_mono) * 1000
        remaining = max(0, (rec.request.expected_tokens or rec.request.max_tokens) - rec.tokens_out)
        predicted = elapsed_ms + (remaining / tps * 1000 if tps else 0.0)
        return on_time_probability(predicted, deadline)

    def _after_run(self, pool: PoolRuntime, rec: TaskRecord) -> None:
        st = self._st
        pool.running.discard(rec.task_id)
        if not rec.lifecycle.terminal:
            self.fail(rec, ErrorCode.INTERNAL, "task runner stopped", True)
        if rec.finished_mono is None:
            rec.finished_mono = st.clock.monotonic()
        self._observe_timings(pool, rec)
        if rec.request.session_id is not None:
            st.sessions.record_turn(
                rec.request.session_id,
                pool.pool_id,
                rec.tokens_in + rec.tokens_out,
                int((rec.finished_mono - rec.created_mono) * 1000),
                st.clock.monotonic(),
            )
        self._retire(rec)
        if not st.closing:
            self.pump(pool)
        st.notify_pool(pool.pool_id)

    def _observe_timings(self, pool: PoolRuntime, rec: TaskRecord) -> None:
        metrics = self._st.metrics
        d = pool.engine.descriptor
        by_priority = (d.engine, d.engine_version, d.pool_id, rec.request.priority.value)
        decode_ms = rec.decode_time_ms()
        ttft = rec.ttft_ms()
        if rec.state is TaskState.DONE and decode_ms is not None:
            pool.perf.observe(rec.tokens_out, float(decode_ms), float(ttft or 0))
            metrics.child(metrics.latency_decode_ms, *by_priority).observe(decode_ms)
        if ttft is not None:
            self._st.ttfts.append(ttft)
        since_admission = rec.first_token_since_admission_ms()
        if since_admission is not None:
            metrics.child(metrics.latency_first_token_ms, *by_priority).observe(since_admission)
        pool.perf.tokens_out_total += rec.tokens_out
        metrics.child(metrics.tokens_out, *metrics.identity(d)).inc(rec.tokens_out)

    # ---- terminal transitions --------------------------------------------------

    def cancel(self, rec: TaskRecord) -> None:
        """End ``rec`` as canceled: idempotent. Never blocks.

        A queued task leaves its queue at once; a running one gets no further
        token after this returns and its runner is canceled.
        """
        if rec.lifecycle.terminal:
            return
        was_queued = rec.state is TaskState.QUEUED
        if was_queued:
            self._st.pools[rec.pool_id].queues.remove(rec.task_id)
        self._st.counters["canceled"] += 1
        identity = self._st.metrics.identity(self._st.pools[rec.pool_id].engine.descriptor)
        reason = "while_queued" if was_queued else "while_running"
        self._st.metrics.tasks_canceled.labels(*identity, reason).inc()
        # tokens still buffered are discarded below: count only what the reader took
        rec.tokens_out = rec.channel.tokens_taken
        self._finish(
            rec,
            TaskState.CANCELED,
            rec.end_event(FinishReason.CANCELED, self._st.clock.monotonic()),
            FinishReason.CANCELED,
        )
        if rec.runner is not None and not rec.runner.done():
            rec.runner.cancel()
        if was_queued:
            self._retire(rec)

    def cancel_unopened(self, task_id: str) -> None:
        """Cancel ``task_id`` if it is still live and nobody opened its stream."""
        rec = self._st.live.get(task_id)
        if rec is not None and not rec.reader_attached:
            log_task(rec, "canceled", "nobody opened the stream in time; task canceled")
            self.cancel(rec)

    def deadline_passed(self, task_id: str) -> None:
        """End ``task_id`` with DEADLINE_UNMET if it is still queued or running."""
        rec = self._st.live.get(task_id)
        deadline = rec.request.deadline_ms if rec is not None else None
        if rec is None or deadline is None or rec.lifecycle.terminal:
            return
        where = "queued" if rec.state is TaskState.QUEUED else "running"
        message = deadline_passed_message(deadline, where, rec.channel.tokens_taken)
        log_task(rec, "deadline", message)
        self.fail(rec, ErrorCode.DEADLINE_UNMET, message, False)
        if rec.runner is not None and not rec.runner.done():
            rec.runner.cancel()

    def cancel_pool(self, pool_id: str) -> None:
        """Cancel every live task of ``pool_id``, queued or running."""
        for rec in [r for r in self._st.live.values() if r.pool_id == pool_id]:
            self.cancel(rec)

    def fail(self, rec: TaskRecord, code: ErrorCode, message: str, retriable: bool) -> None:
        """End ``rec`` with an ``error`` event (no-op once terminal). Never blocks."""
        if rec.lifecycle.terminal:
            return
        was_queued = rec.state is TaskState.QUEUED
        if was_queued:
            self._st.pools[rec.pool_id].queues.remove(rec.task_id)
        self._finish(
            rec, TaskState.FAILED, rec.error_event(code, message, retriable=retriable), None
        )
        if was_queued:
            self._retire(rec)

    def fail_queued(self, pool_id: str | None, message: str) -> None:
        """Fail the queued tasks of ``pool_id`` (of every pool when None) with a
        retriable POOL_UNAVAILABLE error."""
        for rec in list(self._st.live.values()):
            if rec.state is TaskState.QUEUED and (pool_id is None or rec.pool_id == pool_id):
                self.fail(rec, ErrorCode.POOL_UNAVAILABLE, message, True)

    def evict(self, task_id: str) -> None:
        """Fail a task that a drop-lru admission already took out of its queue."""
        rec = self._st.live.get(task_id)
        if rec is None:
            return
        self._finish(
            rec,
            TaskState.FAILED,
            rec.error_event(
                ErrorCode.QUEUE_FULL_DROP_LRU,
                "dropped from a full batch queue to admit a newer task (policy drop-lru)",
                retriable=True,
            ),
            None,
        )
        self._retire(rec)

    def _finish(
        self, rec: TaskRecord, state: TaskState, event: TerminalEvent, reason: FinishReason | None
    ) -> None:
        if rec.lifecycle.terminal:
            return
        rec.lifecycle.to(state)
        if rec.finished_mono is None:
            rec.finished_mono = self._st.clock.monotonic()
        rec.finish_reason = reason
        if reason is FinishReason.CANCELED:
            rec.channel.cancel(event)
        else:
            rec.channel.close(event)
        rec.stop_timers()
        log_task(rec, state.value, f"task {state.value} after {rec.tokens_out} tokens")
        self._st.notify_task(rec)

    def _retire(self, rec: TaskRecord) -> None:
        st = self._st
        if rec.runner is not None and rec.task_id in st.pools[rec.pool_id].running:
            return
        st.live.pop(rec.task_id, None)
        st.done[rec.task_id] = rec
        while len(st.done) > st.config.history:
            st.done.popitem(last=False)
        st.update_queue_gauge(st.pools[rec.pool_id])


def note_kv_warmth(rec: TaskRecord, stream: object) -> bool:
    """Take the engine's own word on KV warmth (a stream's ``kv_warm``) when it gives one.

    Returns whether it gave one (engines without slots, such as the mock, do not).
    """
    reported = getattr(stream, "kv_warm", None)
    if isinstance(reported, bool):
        rec.kv_warm = reported
        return True
    return False
