"""The admission path: guardrails, placement and enqueueing of a new task.

``Admitter.submit`` checks the request against the session budgets and the
pools' context sizes, asks the pure placement policy for a pool, offers the
task to that pool's queues, registers its record and lets the dispatcher take
it. Deciding stays in the pure modules (admission, placement, sessions). All
methods must be called on the orchestrator's loop.
"""

from __future__ import annotations

import asyncio
import uuid
from logging import DEBUG

from app.orchestrator import pools as poolmod
from app.orchestrator.contracts import (
    ENGINE_FEATURES,
    FEATURE_FIELDS,
    AdmissionResponse,
    ErrorCode,
    PlacementMode,
    Priority,
    TaskRequest,
    Workload,
)
from app.orchestrator.deadlines import PoolPace, check_deadline, predicted_finish_ms
from app.orchestrator.decisions import Refusal
from app.orchestrator.dispatch import Dispatcher
from app.orchestrator.errors import (
    Conflict,
    InvalidParams,
    LimitRefused,
    OrchError,
    QueueFull,
    ShuttingDown,
    Unsupported,
)
from app.orchestrator.estimates import matches, predict_start_ms
from app.orchestrator.events import DecisionMade, EventChannel
from app.orchestrator.guardrails import check_ctx, estimate_prompt_tokens, prompt_chars
from app.orchestrator.lifecycle import TaskState
from app.orchestrator.placement import (
    DecisionLog,
    JobSpec,
    PlacementDecision,
    PlacementInput,
    decide,
)
from app.orchestrator.pools import PoolRuntime
from app.orchestrator.queues import Admitted, QueuedItem, retry_after_ms
from app.orchestrator.state import CoreState
from app.orchestrator.tasklog import log_task
from app.orchestrator.tasks import TaskRecord


class Admitter:
    """Admits tasks into the shared ``CoreState`` and hands them to ``dispatcher``."""

    def __init__(self, state: CoreState, dispatcher: Dispatcher) -> None:
        self._st = state
        self._dispatcher = dispatcher

    def submit(
        self, req: TaskRequest, *, identity: str, correlation_id: str | None, api: str
    ) -> AdmissionResponse:
        """Admit ``req`` into a pool's queue. Never blocks.

        Returns the AdmissionResponse. Raises InvalidParams, Conflict (duplicate
        task_id), OrchError ADMISSION_REJECT (guardrail, 400), POOL_UNAVAILABLE /
        POOL_UNREADY (503), QueueFull (429) or ShuttingDown (503).
        """
        try:
            return self._admit(req, identity=identity, correlation_id=correlation_id, api=api)
        except OrchError as exc:
            if exc.engine is None and req.engine is not None:
                exc.engine = req.engine  # the envelope names the engine the request named
            self._count_rejection(exc, req)
            raise

    def _admit(
        self, req: TaskRequest, *, identity: str, correlation_id: str | None, api: str
    ) -> AdmissionResponse:
        st = self._st
        if st.closing:
            raise ShuttingDown()
        self._check_pin(req)
        if req.workload is not Workload.COMPLETION:
            raise InvalidParams(f"workload '{req.workload}' is not served yet; use 'completion'")
        task_id = str(req.task_id)
        if task_id in st.live or task_id in st.done:
            raise Conflict(f"task_id {task_id} already exists; omit task_id to get a new one")
        now = st.clock.monotonic()
        contents = (m.content for m in req.messages or ())
        tokens_in = estimate_prompt_tokens(prompt_chars(req.prompt, contents))
        try:
            self._check_session(req, now)
            decision = self._decide(req, tokens_in)
        except LimitRefused as exc:
            self._record_limit(task_id, req, exc)
            raise
        try:
            pool = self._chosen(req, decision)
            self._check_deadline(req, pool)
            queued = self._enqueue(pool, req, task_id, now)
        except OrchError as exc:
            self._record(task_id, req, decision, exc)
            raise
        self._record(task_id, req, decision, None)
        rec = self._new_record(
            req,
            task_id=task_id,
            pool=pool,
            decision=decision,
            identity=identity,
            correlation_id=correlation_id,
            tokens_in=tokens_in,
        )
        rec.api = api
        rec.queue_position_at_admission = queued.position
        rec.predicted_start_ms = predict_start_ms(pool, queued.position)
        self._register(rec)
        if queued.dropped is not None:
            self._dispatcher.evict(queued.dropped.task_id)
        self._dispatcher.pump(pool)
        return AdmissionResponse(
            task_id=req.task_id,
            queue_position=queued.position,
            predicted_start_ms=rec.predicted_start_ms,
            backoff_ms=0,
            pool_id=pool.pool_id,
            session_id=req.session_id,
        )

    def replace_queued(self, pool_id: str, why: str) -> None:
        """Move the queued tasks of a failed pool to another feasible pool when
        their placement allows fallback (not pinned); fail the rest with a
        retriable POOL_UNAVAILABLE. Never blocks."""
        st = self._st
        old = st.pools[pool_id]
        for rec in [r for r in st.live.values() if r.pool_id == pool_id]:
            if rec.state is not TaskState.QUEUED:
                continue
            overrides = rec.request.placement
            target = None
            if overrides.allow_fallback and overrides.mode is not PlacementMode.PIN:
                target = self._replace_target(rec)
            if target is None:
                self._dispatcher.fail(rec, ErrorCode.POOL_UNAVAILABLE, why, True)
                continue
            old.queues.remove(rec.task_id)
            self._move(rec, target)
        st.update_queue_gauge(old)

    def _replace_target(self, rec: TaskRecord) -> tuple[PoolRuntime, Admitted] | None:
        req = rec.request
        try:
            decision = self._decide(req, rec.tokens_in)
        except OrchError:
            return None
        try:
            pool = self._chosen(req, decision)
            offer = self._enqueue(pool, req, rec.task_id, self._st.clock.monotonic())
        except OrchError as exc:
            self._record(rec.task_id, req, decision, exc)
            return None
        self._record(rec.task_id, req, decision, None)
        rec.decision_summary = decision.log.summary
        return pool, offer

    def _move(self, rec: TaskRecord, target: tuple[PoolRuntime, Admitted]) -> None:
        pool, offer = target
        desc = pool.engine.descriptor
        rec.pool_id, rec.engine, rec.engine_version = pool.pool_id, desc.engine, desc.engine_version
        rec.queue_position_at_admission = offer.position
        log_task(rec, "replaced", f"moved to {pool.pool_id}: {rec.decision_summary}")
        if offer.dropped is not None:
            self._dispatcher.evict(offer.dropped.task_id)
        self._st.notify_task(rec)
        self._dispatcher.pump(pool)

    def _check_pin(self, req: TaskRequest) -> None:
        """Raise InvalidParams when the request pins a pool that does not exist."""
        pin = req.placement.pin_pool_id
        if req.placement.mode is PlacementMode.PIN and pin not in self._st.pools:
            known = ", ".join(sorted(self._st.pools)) or "none"
            raise InvalidParams(
                f"placement.pin_pool_id '{pin}' is not a pool of this server; pin one of: {known}"
            )

    def _check_session(self, req: TaskRequest, now: float) -> None:
        if req.session_id is None:
            return
        expected = req.expected_tokens or req.max_tokens
        self._st.sessions.touch(req.session_id, now)
        refusal = self._st.sessions.check(req.session_id, expected, now)
        if refusal is not None:
            raise LimitRefused(refusal.limit, refusal.message)

    def _decide(self, req: TaskRequest, tokens_in: int) -> PlacementDecision:
        """Run the ctx guardrail and the pure placement policy (records nothing)."""
        st = self._st
        required = tokens_in + req.max_tokens
        self._check_ctx(req, tokens_in)
        self._check_features(req)
        session_pool = None
        if req.session_id is not None:
            sess = st.sessions.get(req.session_id, st.clock.monotonic())
            session_pool = sess.last_pool_id if sess else None
        gpu = st.gpu_probe.snapshot()
        return decide(
            PlacementInput(
                pools=tuple(poolmod.snapshot(p, gpu) for p in st.pools.values()),
                job=JobSpec(
                    priority=req.priority,
                    engine=req.engine,
                    model_ref=req.model_ref,
                    required_ctx=max(required, req.ctx or 0),
                    expected_tokens=req.expected_tokens or req.max_tokens,
                    est_kv_bytes=0,
                    session_pool_id=session_pool,
                    overrides=req.placement,
                    needs=req.needs(),
                ),
            )
        )

    def _chosen(self, req: TaskRequest, decision: PlacementDecision) -> PoolRuntime:
        """Return the pool placement chose; raises POOL_UNAVAILABLE / POOL_UNREADY."""
        if decision.pool_id is None:
            self._refuse_no_capacity(req, decision)
        return self._st.pools[decision.pool_id]  # type: ignore[index]

    def _record(
        self, task_id: str, req: TaskRequest, decision: PlacementDecision, exc: OrchError | None
    ) -> None:
        """Record ``decision`` with its outcome (``exc``: the refusal) and tell observers."""
        st = self._st
        refusal = None if exc is None else _refusal(exc, decision)
        record = st.decisions.add(st.clock.time(), task_id, req, decision.log, refusal)
        self._record_decision_metrics(decision, refusal)
        st.notify(DecisionMade(record))

    def _record_limit(self, task_id: str, req: TaskRequest, exc: LimitRefused) -> None:
        """Record a task a limit refused before placement (no candidates were weighed)."""
        st = self._st
        pinned = req.placement.mode is PlacementMode.PIN
        log = DecisionLog(None, 0, (), (), pinned, False, None, (), "")
        refusal = Refusal(exc.code, exc.limit, exc.message)
        st.notify(DecisionMade(st.decisions.add(st.clock.time(), task_id, req, log, refusal)))

    def _check_deadline(self, req: TaskRequest, pool: PoolRuntime) -> None:
        """Raise DEADLINE_UNMET (400) when the pool's measurements predict a miss."""
        if req.deadline_ms is None:
            return
        queues = pool.queues
        position = (
            queues.depth(Priority.INTERACTIVE)
            if req.priority is Priority.INTERACTIVE
            else len(queues)
        )
        perf = pool.perf
        pace = PoolPace(
            pool.engine.descriptor.slots,
            pool.busy,
            perf.service_ms,
            perf.first_token_ms,
            perf.tokens_per_s,
        )
        predicted = predicted_finish_ms(pace, position, req.expected_tokens or req.max_tokens)
        refusal = check_deadline(req.deadline_ms, predicted, pool.pool_id)
        if refusal is not None:
            raise OrchError(
                ErrorCode.DEADLINE_UNMET,
                refusal.message,
                status=400,
                pool_id=pool.pool_id,
                retriable=False,
            )

    def _check_ctx(self, req: TaskRequest, tokens_in: int) -> None:
        matching = [
            p.engine.descriptor
            for p in self._st.pools.values()
            if matches(p.engine.descriptor.model, p.pool_id, p.engine.descriptor.engine, req)
        ]
        if not matching:
            return
        best = max(matching, key=lambda d: d.ctx)
        refusal = check_ctx(tokens_in, req.max_tokens, best.ctx, best.pool_id)
        if refusal is not None:
            raise LimitRefused(refusal.limit, refusal.message)

    def _check_features(self, req: TaskRequest) -> None:
        """Raise Unsupported (400, naming the field) when no pool serving the model can
        do a feature the task asks for (JSON output, tools, logprobs)."""
        needs = req.needs()
        if not needs:
            return
        matching = [
            p.engine.descriptor
            for p in self._st.pools.values()
            if matches(p.engine.descriptor.model, p.pool_id, p.engine.descriptor.engine, req)
        ]
        if not matching or any(needs <= d.features for d in matching):
            return
        wanted = [f for f in ENGINE_FEATURES if f in needs]
        lacking = [f for f in wanted if not any(f in d.features for d in matching)]
        field = FEATURE_FIELDS[(lacking or wanted)[0]]
        engines = ", ".join(sorted({d.engine for d in matching}))
        raise Unsupported(
            f"'{field}' is not supported by the pools serving this model ({engines}: the "
            "engine, or the model's chat template, cannot do it); remove it, or choose a "
            "model whose capabilities in GET /v1/models include it",
            field,
        )

    def _refuse_no_capacity(self, req: TaskRequest, decision: PlacementDecision) -> None:
        reason = decision.log.no_capacity_reason or "no_feasible_pool"
        code = ErrorCode.POOL_UNREADY if decision.only_unready else ErrorCode.POOL_UNAVAILABLE
        detail = decision.log.summary or reason
        hint = (
            "the pool is still loading; retry shortly"
            if decision.only_unready
            else "check GET /v1/pools and the placement overrides"
        )
        raise OrchError(
            code,
            f"no pool can take this task ({reason}): {detail}; {hint}",
            status=503,
            retriable=decision.only_unready,
            retry_after_ms=2000 if decision.only_unready else None,
        )

    def _enqueue(self, pool: PoolRuntime, req: TaskRequest, task_id: str, now: float) -> Admitted:
        result = pool.queues.offer(QueuedItem(task_id, req.priority, now))
        engine = pool.engine.descriptor.engine
        backpressure = self._st.metrics.admission_backpressure_events
        if isinstance(result, Admitted):
            if result.dropped is not None:
                backpressure.labels(engine, "drop-lru").inc()
            return result
        backpressure.labels(engine, result.policy_label).inc()
        ahead = pool.queues.depth(req.priority)
        raise QueueFull(
            result.message,
            pool_id=pool.pool_id,
            engine=engine,
            retry_after_ms=retry_after_ms(
                ahead, pool.engine.descriptor.slots, pool.perf.service_ms
            ),
            policy_label=result.policy_label,
        )

    def _count_rejection(self, exc: OrchError, req: TaskRequest) -> None:
        """Count a refused admission under its error code (the typed taxonomy)."""
        self._st.counters["rejected"] += 1
        engine = exc.engine or req.engine or "any"
        self._st.metrics.tasks_rejected.labels(engine, exc.code).inc()

    def _new_record(
        self,
        req: TaskRequest,
        *,
        task_id: str,
        pool: PoolRuntime,
        decision: PlacementDecision,
        identity: str,
        correlation_id: str | None,
        tokens_in: int,
    ) -> TaskRecord:
        st = self._st
        return TaskRecord(
            task_id=task_id,
            request=req,
            pool_id=pool.pool_id,
            engine=pool.engine.descriptor.engine,
            engine_version=pool.engine.descriptor.engine_version,
            identity=identity,
            correlation_id=correlation_id or str(uuid.uuid4()),
            channel=EventChannel(st.config.channel_cap),
            created_at=st.clock.time(),
            created_mono=st.clock.monotonic(),
            tokens_in=tokens_in,
            decision_summary=decision.log.summary,
        )

    def _register(self, rec: TaskRecord) -> None:
        st = self._st
        st.live[rec.task_id] = rec
        st.counters["enqueued"] += 1
        identity = st.metrics.identity(st.pools[rec.pool_id].engine.descriptor)
        st.metrics.child(st.metrics.tasks_enqueued, *identity, rec.request.priority.value).inc()
        st.metrics.child(st.metrics.tokens_in, *identity).inc(rec.tokens_in)
        st.update_queue_gauge(st.pools[rec.pool_id])
        loop = asyncio.get_running_loop()
        rec.unopened_timer = loop.call_later(
            st.config.unopened_stream_timeout_s, self._dispatcher.cancel_unopened, rec.task_id
        )
        if rec.request.deadline_ms is not None:
            rec.deadline_timer = loop.call_later(
                rec.request.deadline_ms / 1000, self._dispatcher.deadline_passed, rec.task_id
            )
        log_task(
            rec,
            "admitted",
            f"admitted to {rec.pool_id} at position "
            f"{rec.queue_position_at_admission}; {rec.decision_summary}",
            DEBUG,
        )
        st.notify_task(rec)

    def _record_decision_metrics(
        self, decision: PlacementDecision, refusal: Refusal | None
    ) -> None:
        lg = decision.log
        outcome = "assigned" if refusal is None else "refused"
        if decision.pool_id is None:
            outcome = "no_capacity"
        metrics = self._st.metrics
        pinned, fallback = str(lg.pinned).lower(), str(lg.fallback_used).lower()
        metrics.child(metrics.placement_decisions, outcome, pinned, fallback).inc()
        self._st.metrics.placement_candidates_considered.set(lg.candidates_considered)


def _refusal(exc: OrchError, decision: PlacementDecision) -> Refusal:
    """Return the decision-log refusal for an admission error raised after placement."""
    if isinstance(exc, QueueFull):
        reason = "queue_full"
    elif exc.code == ErrorCode.DEADLINE_UNMET:
        reason = "deadline_unmet"
    else:
        reason = decision.log.no_capacity_reason or "no_feasible_pool"
    return Refusal(exc.code, reason, exc.message)
