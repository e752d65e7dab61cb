"""Property-based checks of the queue and placement invariants."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.orchestrator.contracts import PlacementMode, PlacementOverrides, Priority
from app.orchestrator.placement import (
    JobSpec,
    PlacementDecision,
    PlacementInput,
    PoolSnapshot,
    decide,
    normalise_mask,
)
from app.orchestrator.queues import Admitted, FullPolicy, PoolQueues, QueuedItem
from app.orchestrator.ranking import RANK_KEYS

FAST = settings(max_examples=100, deadline=None)
PLACEMENT = settings(max_examples=75, deadline=None)

# ---- queues ----

OFFER, POP, REMOVE = "offer", "pop", "remove"
operations = st.lists(
    st.one_of(
        st.tuples(st.just(OFFER), st.sampled_from(list(Priority))),
        st.tuples(st.just(POP), st.none()),
        st.tuples(st.just(REMOVE), st.integers(0, 40)),
    ),
    max_size=60,
)


@FAST
@given(capacity=st.integers(1, 5), policy=st.sampled_from(list(FullPolicy)), ops=operations)
def test_queue_matches_a_reference_model(
    capacity: int, policy: FullPolicy, ops: list[tuple[str, Any]]
) -> None:
    queues = PoolQueues(capacity, policy)
    model: dict[Priority, list[str]] = {Priority.INTERACTIVE: [], Priority.BATCH: []}
    for n, (op, arg) in enumerate(ops):
        if op == OFFER:
            _offer(queues, model, capacity, policy, QueuedItem(f"t{n}", arg, float(n)))
        elif op == POP:
            expected = next(iter(model[Priority.INTERACTIVE] + model[Priority.BATCH]), None)
            popped = queues.pop()
            assert (popped.task_id if popped else None) == expected
            for queue in model.values():
                if expected in queue:
                    queue.remove(expected)
        else:
            task_id = f"t{arg}"
            present = any(task_id in q for q in model.values())
            assert queues.remove(task_id) is present
            for queue in model.values():
                if task_id in queue:
                    queue.remove(task_id)
        order = model[Priority.INTERACTIVE] + model[Priority.BATCH]
        assert [i.task_id for i in queues.items()] == order
        assert all(queues.depth(p) <= capacity for p in Priority)
        assert len(queues) == len(order)


def _offer(
    queues: PoolQueues,
    model: dict[Priority, list[str]],
    capacity: int,
    policy: FullPolicy,
    item: QueuedItem,
) -> None:
    queue = model[item.priority]
    result = queues.offer(item)
    dropped = None
    if len(queue) >= capacity:
        if policy is FullPolicy.REJECT or item.priority is Priority.INTERACTIVE:
            assert not isinstance(result, Admitted)
            return
        dropped = queue.pop(0)
    queue.append(item.task_id)
    assert isinstance(result, Admitted)
    assert (result.dropped.task_id if result.dropped else None) == dropped
    ahead = (
        model[Priority.INTERACTIVE]
        if item.priority is Priority.INTERACTIVE
        else [
            *model[Priority.INTERACTIVE],
            *model[Priority.BATCH],
        ]
    )
    assert result.position == len(ahead) - 1


@FAST
@given(st.lists(st.sampled_from(list(Priority)), max_size=30))
def test_pop_order_is_interactive_first_then_fifo(priorities: list[Priority]) -> None:
    queues = PoolQueues(30, FullPolicy.REJECT)
    for n, priority in enumerate(priorities):
        queues.offer(QueuedItem(f"t{n:02d}", priority, float(n)))
    popped = []
    while (item := queues.pop()) is not None:
        popped.append(item)
    ranks = [0 if i.priority is Priority.INTERACTIVE else 1 for i in popped]
    assert ranks == sorted(ranks)
    for priority in Priority:
        times = [i.enqueued_at for i in popped if i.priority is priority]
        assert times == sorted(times)


# ---- placement ----

POOL_IDS = ["a", "b", "c", "d", "e", "gpu0", "gpu1"]
MASKS = ["0", "1", "0,1", "0, 1", "cpu"]
GIB = 1 << 30

# Strategies are built once here: building them inside composites is slow.
_perf = st.one_of(st.none(), st.floats(1.0, 500.0))
_first = st.one_of(st.none(), st.floats(0.0, 2000.0))
_small = st.integers(0, 5)
_flag = st.booleans()
_vram_free = st.one_of(st.none(), st.integers(0, 8).map(lambda n: n * GIB))


def _snapshot(pool_id: str, shape: tuple[Any, ...]) -> PoolSnapshot:
    engine, model, ctx, slots, busy, queued, free, mask, flags, perf, first = shape
    return PoolSnapshot(
        pool_id=pool_id,
        engine=engine,
        engine_version="1",
        model=model,
        ctx=ctx,
        slots_total=slots,
        slots_free=max(slots - busy, 0),
        queued=queued,
        vram_total_bytes=None if free is None else 8 * GIB,
        vram_free_bytes=free,
        device_mask=mask,
        compute_capability=None,
        ready=flags[0],
        draining=flags[1],
        loading=flags[2],
        perf_tokens_per_s=perf,
        first_token_ms=first,
    )


_shape = st.tuples(
    st.sampled_from(["llamacpp", "mock"]),
    st.sampled_from(["tinyllama", "qwen"]),
    st.sampled_from([1024, 4096, 8192]),
    st.integers(1, 4),
    _small,
    _small,
    _vram_free,
    st.sampled_from(MASKS),
    st.tuples(_flag, _flag, _flag),
    _perf,
    _first,
)
_ids = st.lists(st.sampled_from(POOL_IDS), unique=True, max_size=len(POOL_IDS))


@st.composite
def pools(draw: st.DrawFn) -> tuple[PoolSnapshot, ...]:
    return tuple(_snapshot(pool_id, draw(_shape)) for pool_id in draw(_ids))


_modes = st.sampled_from(list(PlacementMode))
_pool_id = st.sampled_from(POOL_IDS)
_some_ids = st.lists(_pool_id, max_size=3)
_mask = st.one_of(st.none(), st.sampled_from(MASKS))


@st.composite
def overrides(draw: st.DrawFn) -> PlacementOverrides:
    mode = draw(_modes)
    return PlacementOverrides(
        mode=mode,
        pin_pool_id=draw(_pool_id) if mode is PlacementMode.PIN else None,
        prefer_pools=[draw(_pool_id), *draw(_some_ids)] if mode is PlacementMode.PREFER else [],
        avoid_pools=draw(_some_ids),
        require_device_mask=draw(_mask),
        allow_fallback=draw(_flag),
    )


jobs = st.builds(
    JobSpec,
    priority=st.sampled_from(list(Priority)),
    engine=st.sampled_from([None, "llamacpp", "mock"]),
    model_ref=st.sampled_from([None, "tinyllama", "qwen", "a", "gpu1"]),
    required_ctx=st.integers(1, 6000),
    expected_tokens=st.integers(0, 2000),
    est_kv_bytes=st.sampled_from([0, GIB, 6 * GIB]),
    session_pool_id=st.one_of(st.none(), _pool_id),
    overrides=overrides(),
)


def _feasible(pool: PoolSnapshot, job: JobSpec) -> bool:
    ov = job.overrides
    free = pool.vram_free_bytes
    return (
        pool.ready
        and not pool.loading
        and not pool.draining
        and job.engine in (None, pool.engine)
        and job.model_ref in (None, pool.model, pool.pool_id)
        and pool.ctx >= job.required_ctx
        and (
            ov.require_device_mask is None
            or normalise_mask(ov.require_device_mask) == normalise_mask(pool.device_mask)
        )
        and (job.est_kv_bytes == 0 or free is None or free >= job.est_kv_bytes)
        and pool.pool_id not in ov.avoid_pools
    )


def _place(snapshots: tuple[PoolSnapshot, ...], job: JobSpec) -> PlacementDecision:
    return decide(PlacementInput(snapshots, job))


@PLACEMENT
@given(snapshots=pools(), job=jobs, data=st.data())
def test_decision_ignores_pool_order(
    snapshots: tuple[PoolSnapshot, ...], job: JobSpec, data: st.DataObject
) -> None:
    shuffled = tuple(data.draw(st.permutations(snapshots)))
    assert _place(shuffled, job) == _place(snapshots, job)


@PLACEMENT
@given(snapshots=pools(), job=jobs)
def test_selected_pool_respects_every_rule(
    snapshots: tuple[PoolSnapshot, ...], job: JobSpec
) -> None:
    decision = _place(snapshots, job)
    by_id = {p.pool_id: p for p in snapshots}
    log = decision.log
    assert [n.pool_id for n in log.candidates] == sorted(by_id)
    assert all(n.reason for n in log.candidates)
    assert decision.pool_id == log.selected_pool_id
    if decision.pool_id is None:
        assert log.no_capacity_reason is not None
        assert not any(n.outcome == "selected" for n in log.candidates)
        return
    assert log.no_capacity_reason is None
    assert not decision.only_unready
    assert _feasible(by_id[decision.pool_id], job)
    assert decision.pool_id not in job.overrides.avoid_pools
    if job.overrides.mode is PlacementMode.PIN:
        assert decision.pool_id == job.overrides.pin_pool_id


@PLACEMENT
@given(snapshots=pools(), job=jobs)
def test_some_feasible_pool_is_selected_in_auto_mode(
    snapshots: tuple[PoolSnapshot, ...], job: JobSpec
) -> None:
    auto = JobSpec(
        job.priority,
        job.engine,
        job.model_ref,
        job.required_ctx,
        job.expected_tokens,
        job.est_kv_bytes,
        job.session_pool_id,
        job.overrides.model_copy(update={"mode": PlacementMode.AUTO}),
    )
    decision = _place(snapshots, auto)
    any_feasible = any(_feasible(p, auto) for p in snapshots)
    assert (decision.pool_id is not None) is any_feasible


def _starts_now(pool: PoolSnapshot) -> bool:
    return pool.slots_free > pool.queued


@PLACEMENT
@given(snapshots=pools(), job=jobs)
def test_a_pool_with_a_free_slot_is_never_passed_over_for_a_queue(
    snapshots: tuple[PoolSnapshot, ...], job: JobSpec
) -> None:
    """Whatever the hints and the session: when some ranked candidate can start
    the task now, the selected pool can start it now too."""
    decision = _place(snapshots, job)
    by_id = {p.pool_id: p for p in snapshots}
    ranked = [n for n in decision.log.candidates if n.outcome in ("selected", "outranked")]
    if decision.pool_id is None or not any(_starts_now(by_id[n.pool_id]) for n in ranked):
        return
    assert _starts_now(by_id[decision.pool_id])


@PLACEMENT
@given(snapshots=pools(), job=jobs)
def test_every_ranked_candidate_names_its_rank_key(
    snapshots: tuple[PoolSnapshot, ...], job: JobSpec
) -> None:
    log = _place(snapshots, job).log
    ranked = sorted(
        (n for n in log.candidates if n.outcome != "filtered"), key=lambda n: n.rank or 0
    )
    assert [n.rank for n in ranked] == list(range(len(ranked)))
    for n in ranked:
        assert n.filter is None
        expected = log.deciding_key if n.outcome == "selected" else n.rank_key
        assert n.rank_key == expected and (n.rank == 0 or n.rank_key in RANK_KEYS)
        assert n.reason.startswith(f"lost on {n.rank_key}:") or n.outcome == "selected"
    for n in log.candidates:
        if n.outcome == "filtered":
            assert n.filter is not None and n.rank_key is None and n.rank is None
