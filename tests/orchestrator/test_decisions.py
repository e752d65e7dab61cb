"""The decision book: each decision carries its admission outcome and candidate fields."""

from __future__ import annotations

import asyncio

import pytest

from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.contracts import ErrorCode, PlacementOverrides, Priority, TaskRequest
from app.orchestrator.decisions import DecisionBook, Refusal
from app.orchestrator.errors import OrchError, QueueFull
from app.orchestrator.placement import (
    DecisionLog,
    JobSpec,
    PlacementInput,
    PoolSnapshot,
    decide,
)
from app.orchestrator.service import Orchestrator, OrchestratorConfig

REQ = TaskRequest(prompt="hello", max_tokens=4)
QUEUE_FULL = Refusal("ADMISSION_REJECT", "queue_full", "queue for pool a is full: 1 of 1")


JOB = JobSpec(Priority.INTERACTIVE, None, None, 16, 4, 0, None, PlacementOverrides())


def pool(pool_id: str, *, slots_free: int = 1, draining: bool = False) -> PoolSnapshot:
    return PoolSnapshot(
        pool_id, "mock", "1", "m", 4096, 1, slots_free, 0, None, None, "0", None, True, draining
    )


def _log(*pools: PoolSnapshot) -> DecisionLog:
    snapshots = pools or (pool("a"), pool("b", slots_free=0))
    return decide(PlacementInput(tuple(snapshots), JOB)).log


OUTCOME_CASES = [
    # (name, refusal, outcome, pool_id, code, reason, outcome of a's candidate)
    ("admitted", None, "admitted", "a", None, None, "selected"),
    (
        "refused by the queue",
        QUEUE_FULL,
        "refused",
        None,
        "ADMISSION_REJECT",
        "queue_full",
        "refused",
    ),
]


@pytest.mark.parametrize("case", OUTCOME_CASES, ids=[case[0] for case in OUTCOME_CASES])
def test_a_record_says_admitted_or_refused(case: tuple[object, ...]) -> None:
    _, refusal, outcome, pool_id, code, reason, a_outcome = case
    assert refusal is None or isinstance(refusal, Refusal)
    record = DecisionBook().add(1.0, "t1", REQ, _log(), refusal)
    assert (record.outcome, record.pool_id) == (outcome, pool_id)
    assert (record.refusal_code, record.refusal_reason) == (code, reason)
    assert record.selected_pool_id == "a" and record.deciding_key == "starts_now"
    by_id = {c.pool_id: c for c in record.candidates}
    assert by_id["a"].outcome == a_outcome and by_id["a"].rank == 0
    assert by_id["b"].outcome == "outranked"
    assert (by_id["b"].rank_key, by_id["b"].rank) == ("starts_now", 1)


def test_a_no_capacity_refusal_has_only_filtered_candidates() -> None:
    log = _log(pool("a", draining=True))
    refusal = Refusal("POOL_UNAVAILABLE", "no_feasible_pool", "no pool can take this task")
    record = DecisionBook().add(1.0, "t1", REQ, log, refusal)
    assert (record.outcome, record.refusal_reason, record.pool_id) == (
        "refused", "no_feasible_pool", None,
    )  # fmt: skip
    assert [(c.outcome, c.filter, c.rank_key) for c in record.candidates] == [
        ("filtered", "draining", None)
    ]


def test_latest_for_finds_a_task_until_its_record_leaves_the_ring() -> None:
    book = DecisionBook(capacity=2)
    first = book.add(1.0, "t1", REQ, _log())
    assert book.latest_for("t1") is first
    again = book.add(2.0, "t1", REQ, _log())
    assert book.latest_for("t1") is again
    book.add(3.0, "t2", REQ, _log())
    assert book.latest_for("t1") is again
    book.add(4.0, "t3", REQ, _log())
    assert book.latest_for("t1") is None and len(book) == 2


async def _orch(*specs: MockSpec, **cfg: object) -> Orchestrator:
    orch = Orchestrator([MockEngine(s) for s in specs], OrchestratorConfig(**cfg))  # type: ignore[arg-type]
    await orch.start()
    await asyncio.sleep(0.01)
    return orch


async def test_a_queue_full_refusal_is_recorded_as_a_refusal() -> None:
    orch = await _orch(MockSpec("a", tokens_per_s=5), queue_capacity=1)
    running = orch.submit(TaskRequest(prompt="x", max_tokens=50))
    queued = orch.submit(TaskRequest(prompt="x", max_tokens=50))
    with pytest.raises(QueueFull):
        orch.submit(TaskRequest(prompt="x", max_tokens=50))
    newest, *older = orch.recent_decisions(3)
    assert [d.outcome for d in older] == ["admitted", "admitted"]
    assert [d.task_id for d in older] == [str(queued.task_id), str(running.task_id)]
    assert newest.outcome == "refused" and newest.pool_id is None
    assert (newest.refusal_code, newest.refusal_reason) == ("ADMISSION_REJECT", "queue_full")
    assert [c.outcome for c in newest.candidates] == ["refused"]
    assert newest.summary.startswith("refused: queue for pool a (interactive) is full")
    await orch.shutdown(deadline_s=0.1)


async def test_a_no_capacity_refusal_is_recorded_with_its_code() -> None:
    orch = await _orch(MockSpec("a", tokens_per_s=0))
    with pytest.raises(OrchError) as exc:
        orch.submit(
            TaskRequest.model_validate({"prompt": "x", "placement": {"avoid_pools": ["a"]}})
        )
    assert exc.value.code == ErrorCode.POOL_UNAVAILABLE
    (record,) = orch.recent_decisions(1)
    assert (record.outcome, record.refusal_code, record.refusal_reason) == (
        "refused", "POOL_UNAVAILABLE", "no_feasible_pool",
    )  # fmt: skip
    await orch.shutdown()


async def test_refusals_by_a_limit_are_recorded_with_the_limit() -> None:
    orch = await _orch(MockSpec("a", ctx=128, tokens_per_s=0), session_max_turns=1)
    with pytest.raises(OrchError) as exc:
        orch.submit(TaskRequest(prompt="x" * 400, max_tokens=100))
    assert exc.value.code == ErrorCode.ADMISSION_REJECT and exc.value.status == 400
    (ctx,) = orch.recent_decisions(1)
    assert (ctx.outcome, ctx.refusal_code, ctx.refusal_reason) == (
        "refused", "ADMISSION_REJECT", "ctx",
    )  # fmt: skip
    assert ctx.candidates == [] and ctx.pool_id is None
    assert ctx.summary.startswith("refused: prompt (~100 tokens)") and not ctx.summary.endswith(";")
    first = orch.submit(TaskRequest(prompt="hi", max_tokens=4, session_id="s1"))
    for _ in range(200):  # the turn counts once it has finished
        if orch.task(str(first.task_id)).state == "done":
            break
        await asyncio.sleep(0.01)
    with pytest.raises(OrchError):
        orch.submit(TaskRequest(prompt="again", max_tokens=4, session_id="s1"))
    turns = orch.recent_decisions(1)[0]
    assert (turns.outcome, turns.refusal_reason) == ("refused", "turns")
    await orch.shutdown()
