"""deadline_ms: refused at admission when measurements predict a miss, a terminal
DEADLINE_UNMET error when it passes while queued or running."""

from __future__ import annotations

import asyncio

import pytest

from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.contracts import ErrorCode, TaskRequest
from app.orchestrator.deadlines import PoolPace, check_deadline, predicted_finish_ms
from app.orchestrator.errors import OrchError
from app.orchestrator.events import ERROR, TaskEvent
from app.orchestrator.service import Orchestrator, OrchestratorConfig
from tests.orchestrator.support import error_of

PREDICTION_CASES = [
    # (name, pace, position, expected tokens, predicted ms)
    ("nothing measured", PoolPace(1, 0, None, None, None), 0, 100, None),
    ("idle pool", PoolPace(1, 0, 900.0, 50.0, 100.0), 0, 100, 1050.0),
    ("busy slot: wait one round", PoolPace(1, 1, 900.0, 50.0, 100.0), 0, 100, 1950.0),
    ("two ahead on two slots", PoolPace(2, 2, 900.0, 50.0, 100.0), 1, 100, 1950.0),
    ("no throughput yet", PoolPace(1, 0, 900.0, 50.0, 0.0), 0, 100, None),
]


@pytest.mark.parametrize(
    ("pace", "position", "tokens", "expected"),
    [case[1:] for case in PREDICTION_CASES],
    ids=[case[0] for case in PREDICTION_CASES],
)
def test_predicted_finish(
    pace: PoolPace, position: int, tokens: int, expected: float | None
) -> None:
    assert predicted_finish_ms(pace, position, tokens) == expected


CHECK_CASES = [
    ("no deadline", None, 5000.0, False),
    ("no prediction", 100, None, False),
    ("fits", 1000, 999.5, False),
    ("exactly on time", 1000, 1000.0, False),
    ("misses", 1000, 1000.5, True),
]


@pytest.mark.parametrize(
    ("deadline", "predicted", "refused"),
    [case[1:] for case in CHECK_CASES],
    ids=[case[0] for case in CHECK_CASES],
)
def test_check_deadline(deadline: int | None, predicted: float | None, refused: bool) -> None:
    refusal = check_deadline(deadline, predicted, "p0")
    assert (refusal is not None) is refused
    if refusal is not None:
        assert "deadline_ms 1000 cannot be met" in refusal.message
        assert "~1001 ms" in refusal.message and "raise deadline_ms" in refusal.message


async def _orch(*specs: MockSpec, **cfg: object) -> tuple[Orchestrator, list[MockEngine]]:
    engines = [MockEngine(s) for s in specs]
    orch = Orchestrator(engines, OrchestratorConfig(**cfg))  # type: ignore[arg-type]
    await orch.start()
    await asyncio.sleep(0.01)
    return orch, engines


async def _events(orch: Orchestrator, task_id: str) -> list[TaskEvent]:
    return [event async for event in orch.stream(task_id)]


async def test_a_deadline_the_measured_pool_cannot_meet_is_refused_at_admission() -> None:
    orch, _ = await _orch(MockSpec("a", tokens_per_s=100))
    warm = str(orch.submit(TaskRequest(prompt="x", max_tokens=5)).task_id)
    await _events(orch, warm)  # the pool now has measurements (~100 tokens/s)
    await asyncio.sleep(0.01)
    orch.submit(TaskRequest(prompt="x", max_tokens=5, deadline_ms=60_000))  # fits
    with pytest.raises(OrchError) as exc:
        orch.submit(TaskRequest(prompt="x", max_tokens=100, deadline_ms=50))
    assert exc.value.code == ErrorCode.DEADLINE_UNMET and exc.value.status == 400
    assert "deadline_ms 50 cannot be met" in exc.value.message
    (record,) = orch.recent_decisions(1)
    assert (record.outcome, record.refusal_code, record.refusal_reason) == (
        "refused", "DEADLINE_UNMET", "deadline_unmet",
    )  # fmt: skip
    await orch.shutdown(deadline_s=0.1)


async def test_a_deadline_that_passes_while_queued_ends_the_task_with_an_error() -> None:
    orch, engines = await _orch(MockSpec("a", tokens_per_s=0, hang_after_tokens=0))
    blocker = str(orch.submit(TaskRequest(prompt="x", max_tokens=5)).task_id)
    orch.open_stream(blocker)
    queued = str(orch.submit(TaskRequest(prompt="x", max_tokens=5, deadline_ms=80)).task_id)
    events = await asyncio.wait_for(_events(orch, queued), 2)
    assert [e.kind for e in events] == [ERROR]
    assert error_of(events, 0)["code"] == "DEADLINE_UNMET" and not error_of(events, 0)["retriable"]
    assert "passed while the task was queued" in error_of(events, 0)["message"]
    assert orch.task(queued).state == "failed"
    assert orch.pool_view("a").queue.interactive == 0
    assert engines[0].opened_streams == 1  # the queued task never reached the engine
    await orch.shutdown(deadline_s=0.1)


async def test_a_deadline_that_passes_while_running_stops_it_and_frees_the_slot() -> None:
    orch, engines = await _orch(MockSpec("a", tokens_per_s=0, hang_after_tokens=2))
    task = str(orch.submit(TaskRequest(prompt="x", max_tokens=50, deadline_ms=150)).task_id)
    events = await asyncio.wait_for(_events(orch, task), 2)
    assert [e.kind for e in events] == ["started", "token", "token", ERROR]
    assert error_of(events)["code"] == "DEADLINE_UNMET"
    assert "passed while the task was running (2 tokens delivered)" in error_of(events)["message"]
    await asyncio.sleep(0.05)
    assert orch.live_task_count() == 0 and engines[0].closed_streams == 1
    await orch.shutdown()


async def test_a_task_that_ends_in_time_is_untouched_by_its_deadline() -> None:
    orch, _ = await _orch(MockSpec("a", tokens_per_s=0))
    task = str(orch.submit(TaskRequest(prompt="x", max_tokens=3, deadline_ms=100)).task_id)
    assert [e.kind for e in await _events(orch, task)][-1] == "end"
    await asyncio.sleep(0.15)
    assert orch.task(task).state == "done" and orch.task(task).error is None
    await orch.shutdown()
