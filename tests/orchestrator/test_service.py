"""The Orchestrator facade end to end on mock engines (no HTTP)."""

from __future__ import annotations

import asyncio
import random

import pytest

from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.contracts import ErrorCode, TaskRequest, dump
from app.orchestrator.errors import Conflict, InvalidParams, NotFound, OrchError, QueueFull
from app.orchestrator.events import (
    END,
    ERROR,
    STARTED,
    TOKEN,
    DecisionMade,
    PoolChanged,
    TaskChanged,
    TaskEvent,
)
from app.orchestrator.lifecycle import PoolState, TaskState
from app.orchestrator.queues import FullPolicy
from app.orchestrator.service import Orchestrator, OrchestratorConfig, on_time_probability
from tests.orchestrator.support import end_of, error_of


async def _orch(*specs: MockSpec, **cfg: object) -> Orchestrator:
    orch = Orchestrator([MockEngine(s) for s in specs], OrchestratorConfig(**cfg))  # type: ignore[arg-type]
    await orch.start()
    await asyncio.sleep(0.01)
    return orch


async def _collect(orch: Orchestrator, task_id: str) -> list[TaskEvent]:
    return [ev async for ev in orch.stream(task_id)]


def _req(**kw: object) -> TaskRequest:
    kw.setdefault("prompt", "hello")
    kw.setdefault("max_tokens", 5)
    return TaskRequest(**kw)


async def test_submit_and_stream_in_order() -> None:
    orch = await _orch(MockSpec("m0", tokens_per_s=0))
    adm = orch.submit(_req(seed=7))
    events = await _collect(orch, str(adm.task_id))
    kinds = [e.kind for e in events]
    assert kinds == [STARTED] + [TOKEN] * 5 + [END]
    assert [e.data["i"] for e in events if e.kind == TOKEN] == [0, 1, 2, 3, 4]
    assert end_of(events)["finish_reason"] == "length"
    assert end_of(events)["decode_ms"] == end_of(events)["decode_time_ms"]
    view = orch.task(str(adm.task_id))
    assert view.state == "done" and view.tokens_out == 5 and view.pool_id == "m0"
    assert view.state is TaskState.DONE and dump(view)["state"] == "done"
    pool = orch.pool_view("m0")
    assert pool.state is PoolState.READY and dump(pool)["state"] == "ready"
    await asyncio.sleep(0.01)  # the runner releases its slot after closing the engine stream
    assert orch.live_task_count() == 0
    await orch.shutdown()


async def test_end_event_reports_the_decode_time() -> None:
    orch = await _orch(MockSpec("m0", tokens_per_s=100))
    tid = str(orch.submit(_req(max_tokens=6)).task_id)
    end = end_of(await _collect(orch, tid))
    # 5 gaps of 10 ms between the first and the last token
    assert end["decode_time_ms"] >= 40 and end["decode_ms"] == end["decode_time_ms"]
    assert orch.task(tid).decode_time_ms == end["decode_time_ms"]
    await orch.shutdown()


async def test_same_seed_same_text() -> None:
    orch = await _orch(MockSpec("m0", tokens_per_s=0))
    texts = []
    for _ in range(2):
        adm = orch.submit(_req(seed=42, max_tokens=8))
        texts.append(
            "".join(e.data["t"] for e in await _collect(orch, str(adm.task_id)) if e.kind == TOKEN)
        )
    assert texts[0] == texts[1] and texts[0]
    await orch.shutdown()


async def test_invalid_workload_duplicate_and_unknown() -> None:
    orch = await _orch(MockSpec("m0", tokens_per_s=0))
    with pytest.raises(InvalidParams, match="not served yet"):
        orch.submit(_req(workload="embedding"))
    adm = orch.submit(_req())
    with pytest.raises(Conflict):
        orch.submit(_req(task_id=adm.task_id))
    with pytest.raises(NotFound):
        orch.cancel("00000000-0000-0000-0000-000000000000")
    await orch.shutdown()


async def test_ctx_guardrail_names_the_limit() -> None:
    orch = await _orch(MockSpec("m0", ctx=128, tokens_per_s=0))
    with pytest.raises(OrchError) as exc:
        orch.submit(_req(prompt="x" * 400, max_tokens=100))
    assert exc.value.code == ErrorCode.ADMISSION_REJECT and exc.value.status == 400
    assert "128" in exc.value.message
    await orch.shutdown()


async def test_backpressure_never_admits_more_than_capacity() -> None:
    orch = await _orch(MockSpec("m0", tokens_per_s=5), queue_capacity=3)
    admitted, refused = [], []
    for _ in range(30):
        try:
            admitted.append(orch.submit(_req(max_tokens=50)))
        except QueueFull as exc:
            refused.append(exc)
    # one dispatched at once (1 slot) + 3 queued
    assert len(admitted) == 4 and len(refused) == 26
    assert all(e.status == 429 and e.retry_after_ms and e.retry_after_ms >= 100 for e in refused)
    assert refused[0].policy_label == "reject"
    await orch.shutdown(deadline_s=0.1)


async def test_drop_lru_evicts_oldest_batch_with_error() -> None:
    orch = await _orch(
        MockSpec("m0", tokens_per_s=5), queue_capacity=2, full_policy=FullPolicy.DROP_LRU
    )
    ids = [str(orch.submit(_req(priority="batch", max_tokens=50)).task_id) for _ in range(4)]
    # ids[0] is running; ids[1] was the oldest queued batch item and got evicted
    events = await _collect(orch, ids[1])
    assert events[-1].kind == ERROR
    assert events[-1].data["code"] == "QUEUE_FULL_DROP_LRU"
    assert orch.task(ids[1]).state == "failed"
    await orch.shutdown(deadline_s=0.1)


async def test_cancel_queued_and_running() -> None:
    orch = await _orch(MockSpec("m0", tokens_per_s=100))
    running = str(orch.submit(_req(max_tokens=1000)).task_id)
    queued = str(orch.submit(_req(max_tokens=10)).task_id)
    orch.cancel(queued)
    assert orch.task(queued).state == "canceled"
    handle = orch.open_stream(running)
    seen = []
    while (ev := await handle.next()) is not None:
        seen.append(ev)
        if sum(e.kind == TOKEN for e in seen) == 3:
            orch.cancel(running)
            orch.cancel(running)  # idempotent
    tail = seen[[i for i, e in enumerate(seen) if e.kind == TOKEN][2] + 1 :]
    assert [e.kind for e in tail] == [END]
    assert end_of(tail[:1])["finish_reason"] == "canceled"
    await asyncio.sleep(0.05)
    assert orch.live_task_count() == 0
    await orch.shutdown()


async def test_random_cancel_races_on_the_facade() -> None:
    orch = await _orch(MockSpec("m0", tokens_per_s=0, slots=2), queue_capacity=64)
    rng = random.Random(5)
    for _ in range(200):
        tid = str(orch.submit(_req(max_tokens=rng.randint(1, 20))).task_id)
        handle = orch.open_stream(tid)
        cancel_after = rng.randint(0, 25)
        events, canceled = [], False
        while (ev := await handle.next()) is not None:
            events.append(ev)
            if canceled:
                assert ev.kind != TOKEN
            if len(events) == cancel_after:
                orch.cancel(tid)
                canceled = True
        assert sum(e.kind in (END, ERROR) for e in events) == 1
    await asyncio.sleep(0.05)
    assert orch.live_task_count() == 0
    await orch.shutdown()


async def test_second_reader_conflicts() -> None:
    orch = await _orch(MockSpec("m0", tokens_per_s=0))
    tid = str(orch.submit(_req()).task_id)
    orch.open_stream(tid)
    with pytest.raises(Conflict):
        orch.open_stream(tid)
    await orch.shutdown()


async def test_engine_failure_and_crash_become_one_error_frame() -> None:
    orch = await _orch(
        MockSpec("fail", tokens_per_s=0, fail_after_tokens=2, model="f"),
        MockSpec("crash", tokens_per_s=0, crash_after_tokens=3, model="c", restart_delay_ms=10),
    )
    ev_fail = await _collect(orch, str(orch.submit(_req(model_ref="f")).task_id))
    assert [e.kind for e in ev_fail].count(TOKEN) == 2
    assert ev_fail[-1].kind == ERROR and error_of(ev_fail)["code"] == "INTERNAL"
    ev_crash = await _collect(orch, str(orch.submit(_req(model_ref="c")).task_id))
    assert error_of(ev_crash)["code"] == "WORKER_RESET" and error_of(ev_crash)["retriable"]
    await asyncio.sleep(0.05)
    assert orch.pool_view("crash").state == "ready"
    ok = await _collect(orch, str(orch.submit(_req(model_ref="c", max_tokens=2)).task_id))
    assert ok[-1].kind == END
    await orch.shutdown()


async def test_unready_pool_gives_pool_unready() -> None:
    orch = await _orch(MockSpec("slow", start_delay_ms=10_000))
    with pytest.raises(OrchError) as exc:
        orch.submit(_req())
    assert exc.value.code == "POOL_UNREADY" and exc.value.status == 503
    await orch.shutdown()


async def test_pin_and_avoid_reach_the_decision_log() -> None:
    orch = await _orch(MockSpec("a", tokens_per_s=0), MockSpec("b", tokens_per_s=0))
    adm = orch.submit(_req(placement={"mode": "pin", "pin_pool_id": "b"}))
    assert adm.pool_id == "b"
    adm2 = orch.submit(_req(placement={"avoid_pools": ["a"]}))
    assert adm2.pool_id == "b"
    decisions = orch.recent_decisions(10)
    assert decisions[0].task_id == str(adm2.task_id)
    assert any(c.pool_id == "a" and c.filter == "avoided" for c in decisions[0].candidates)
    with pytest.raises(OrchError) as exc:
        orch.submit(_req(placement={"mode": "pin", "pin_pool_id": "zzz"}))
    assert (exc.value.code, exc.value.status) == ("INVALID_PARAMS", 400)  # no such pool
    await orch.shutdown()


async def test_sessions_track_turns_and_affinity() -> None:
    orch = await _orch(MockSpec("a", tokens_per_s=0), MockSpec("b", tokens_per_s=0))
    first = orch.submit(_req(session_id="s1"))
    await _collect(orch, str(first.task_id))
    await asyncio.sleep(0.01)
    second = orch.submit(_req(session_id="s1"))
    assert second.pool_id == first.pool_id
    await _collect(orch, str(second.task_id))
    await asyncio.sleep(0.01)
    info = orch.session("s1")
    assert info.turns == 2 and info.last_pool_id == first.pool_id
    orch.delete_session("s1")
    with pytest.raises(NotFound):
        orch.session("s1")
    await orch.shutdown()


async def test_drain_stops_admission_and_reload_reports_outcome() -> None:
    orch = await _orch(MockSpec("a", tokens_per_s=0))
    orch.drain("a", 0)
    with pytest.raises(OrchError) as exc:
        orch.submit(_req())
    assert exc.value.code == "POOL_UNAVAILABLE"
    orch.resume("a")
    orch.submit(_req())
    bad = await orch.reload("a", "bad-model")
    assert not bad.ok and bad.model == "mock"
    good = await orch.reload("a", "other")
    assert good.ok and orch.pool_view("a").model == "other"
    await orch.shutdown()


async def test_unopened_stream_is_canceled() -> None:
    orch = await _orch(MockSpec("a", tokens_per_s=20), unopened_stream_timeout_s=0.05)
    tid = str(orch.submit(_req(max_tokens=100)).task_id)
    await asyncio.sleep(0.15)
    assert orch.task(tid).state == "canceled"
    await orch.shutdown()


KINDS = {TaskChanged: "task", PoolChanged: "pool", DecisionMade: "decision"}


async def test_observers_see_tasks_pools_and_decisions() -> None:
    orch = await _orch(MockSpec("a", tokens_per_s=0))
    seen: list[str] = []
    unsubscribe = orch.subscribe(lambda event: seen.append(KINDS[type(event)]))
    await _collect(orch, str(orch.submit(_req()).task_id))
    await asyncio.sleep(0.01)
    assert {"task", "decision", "pool"} <= set(seen)
    n = len(seen)
    unsubscribe()
    await _collect(orch, str(orch.submit(_req()).task_id))
    assert len(seen) == n
    await orch.shutdown()


def test_on_time_probability_is_monotonic() -> None:
    assert on_time_probability(1000, 2000) > 0.99
    assert on_time_probability(3000, 1000) < 0.01
    assert 0.4 < on_time_probability(1000, 1000) < 0.6


async def test_failed_pool_moves_queued_tasks_that_allow_fallback() -> None:
    a, b = MockEngine(MockSpec("a", tokens_per_s=50)), MockEngine(MockSpec("b", tokens_per_s=0))
    orch = Orchestrator([a, b])
    await orch.start()
    await asyncio.sleep(0.01)
    prefer_a = {"mode": "prefer", "prefer_pools": ["a"]}
    running = orch.submit(_req(max_tokens=30, placement=prefer_a))
    movable = orch.submit(_req(max_tokens=3, placement=prefer_a))
    pinned = orch.submit(_req(max_tokens=3, placement={"mode": "pin", "pin_pool_id": "a"}))
    assert {running.pool_id, movable.pool_id, pinned.pool_id} == {"a"}
    a.fail("too many crashes")
    moved = await _collect(orch, str(movable.task_id))
    first = moved[0]
    assert first.kind == STARTED and first.data["pool_id"] == "b" and moved[-1].kind == END
    stuck = await _collect(orch, str(pinned.task_id))
    assert stuck[-1].kind == ERROR and error_of(stuck)["code"] == "POOL_UNAVAILABLE"
    assert "too many crashes" in stuck[-1].data["message"]
    assert orch.task(str(movable.task_id)).pool_id == "b"
    await orch.shutdown(deadline_s=0)


async def test_the_facade_hands_out_no_mutable_internals() -> None:
    orch = await _orch(MockSpec("m0", tokens_per_s=0))
    for internal in ("sessions", "decisions", "gpu_probe"):
        assert not hasattr(orch, internal)
    counters = orch.counters
    counters["started"] = 99
    assert orch.counters["started"] == 0
    with pytest.raises(AttributeError):
        orch.config = orch.config  # type: ignore[misc]
    await orch.shutdown()


async def test_a_stream_handle_carries_the_tasks_prompt_estimate() -> None:
    orch = await _orch(MockSpec("m0", tokens_per_s=0))
    adm = orch.submit(_req(prompt="word " * 40))
    handle = orch.open_stream(str(adm.task_id))
    assert handle.tokens_in == orch.task(str(adm.task_id)).tokens_in > 0
    await orch.shutdown(deadline_s=0.1)
