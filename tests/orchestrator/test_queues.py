"""Admission queues (reject / drop-lru) and backoff."""

from __future__ import annotations

import pytest

from app.orchestrator.contracts import Priority
from app.orchestrator.queues import (
    Admitted,
    FullPolicy,
    PoolQueues,
    QueuedItem,
    Refused,
    retry_after_ms,
)

INT, BAT = Priority.INTERACTIVE, Priority.BATCH


def item(task_id: str, priority: Priority = INT, at: float = 0.0) -> QueuedItem:
    return QueuedItem(task_id, priority, at)


def ids(queues: PoolQueues) -> list[str]:
    return [q.task_id for q in queues.items()]


def fill(queues: PoolQueues, *specs: tuple[str, Priority]) -> None:
    for n, (task_id, priority) in enumerate(specs):
        assert isinstance(queues.offer(item(task_id, priority, float(n))), Admitted)


# ---- full queues ----


@pytest.mark.parametrize("priority", [INT, BAT])
def test_reject_policy_refuses_newcomer(priority: Priority) -> None:
    queues = PoolQueues(2, FullPolicy.REJECT, pool_id="gpu0")
    fill(queues, ("t1", priority), ("t2", priority))
    result = queues.offer(item("t3", priority))
    assert isinstance(result, Refused)
    assert result.reason == "queue_full"
    assert result.policy_label == "reject"
    assert result.message == (
        f"queue for pool gpu0 ({priority}) is full: 2 of 2; "
        "retry later or raise [admission] queue_capacity"
    )
    assert ids(queues) == ["t1", "t2"]


def test_drop_lru_evicts_the_oldest_batch_item() -> None:
    queues = PoolQueues(2, FullPolicy.DROP_LRU)
    fill(queues, ("b1", BAT), ("i1", INT), ("b2", BAT), ("i2", INT))
    result = queues.offer(item("b3", BAT, 9.0))
    assert isinstance(result, Admitted)
    assert result.dropped == item("b1", BAT, 0.0)
    assert result.position == 3
    assert ids(queues) == ["i1", "i2", "b2", "b3"]
    assert queues.position("b1") is None


def test_drop_lru_never_evicts_interactive() -> None:
    queues = PoolQueues(2, FullPolicy.DROP_LRU, pool_id="gpu0")
    fill(queues, ("i1", INT), ("i2", INT), ("b1", BAT))
    result = queues.offer(item("i3", INT))
    assert isinstance(result, Refused)
    assert result.policy_label == "drop-lru"
    assert "interactive tasks are never dropped" in result.message
    assert "2 of 2" in result.message
    assert ids(queues) == ["i1", "i2", "b1"]


def test_capacity_is_per_priority() -> None:
    queues = PoolQueues(1, FullPolicy.REJECT)
    fill(queues, ("i1", INT), ("b1", BAT))
    assert queues.depth(INT) == 1 and queues.depth(BAT) == 1 and queues.depth() == 2
    assert isinstance(queues.offer(item("b2", BAT)), Refused)


def test_refusal_without_pool_id_still_reads_well() -> None:
    queues = PoolQueues(1, FullPolicy.REJECT)
    fill(queues, ("i1", INT))
    result = queues.offer(item("i2", INT))
    assert isinstance(result, Refused)
    assert result.message.startswith("queue for this pool (interactive) is full: 1 of 1")


def test_shrinking_capacity_keeps_items_and_refuses_until_below() -> None:
    queues = PoolQueues(3, FullPolicy.DROP_LRU)
    fill(queues, ("b1", BAT), ("b2", BAT), ("b3", BAT))
    queues.capacity = 2
    assert ids(queues) == ["b1", "b2", "b3"]
    assert isinstance(queues.offer(item("b4", BAT)), Refused)
    queues.pop()
    result = queues.offer(item("b4", BAT))  # back at 2 of 2: drop-lru applies again
    assert isinstance(result, Admitted)
    assert result.dropped is not None and result.dropped.task_id == "b2"
    assert ids(queues) == ["b3", "b4"]


def test_shrink_then_drain_admits_again() -> None:
    queues = PoolQueues(3, FullPolicy.REJECT)
    fill(queues, ("i1", INT), ("i2", INT), ("i3", INT))
    queues.capacity = 1
    assert isinstance(queues.offer(item("i4", INT)), Refused)
    queues.pop()
    queues.pop()
    assert isinstance(queues.offer(item("i4", INT)), Refused)
    queues.pop()
    assert isinstance(queues.offer(item("i4", INT)), Admitted)


def test_policy_can_change_at_runtime() -> None:
    queues = PoolQueues(1, FullPolicy.REJECT)
    fill(queues, ("b1", BAT))
    assert isinstance(queues.offer(item("b2", BAT)), Refused)
    queues.policy = FullPolicy.DROP_LRU
    result = queues.offer(item("b2", BAT))
    assert isinstance(result, Admitted) and result.dropped is not None
    assert result.dropped.task_id == "b1"


@pytest.mark.parametrize("capacity", [0, -1])
def test_invalid_capacity(capacity: int) -> None:
    with pytest.raises(ValueError, match="queue_capacity"):
        PoolQueues(capacity, FullPolicy.REJECT)
    queues = PoolQueues(1, FullPolicy.REJECT)
    with pytest.raises(ValueError, match=f"got {capacity}"):
        queues.capacity = capacity


def test_duplicate_task_is_refused() -> None:
    queues = PoolQueues(4, FullPolicy.REJECT)
    fill(queues, ("t1", INT))
    with pytest.raises(ValueError, match="t1 is already queued"):
        queues.offer(item("t1", BAT))


# ---- order, positions, removal ----


def test_positions_put_interactive_first() -> None:
    queues = PoolQueues(4, FullPolicy.REJECT)
    assert queues.offer(item("b1", BAT)) == Admitted(0)
    assert queues.offer(item("b2", BAT)) == Admitted(1)
    assert queues.offer(item("i1", INT)) == Admitted(0)
    assert queues.offer(item("i2", INT)) == Admitted(1)
    assert queues.offer(item("b3", BAT)) == Admitted(4)
    assert [queues.position(t) for t in ("i1", "i2", "b1", "b2", "b3")] == [0, 1, 2, 3, 4]
    assert queues.position("nope") is None


def test_pop_interactive_first_then_fifo() -> None:
    queues = PoolQueues(4, FullPolicy.REJECT)
    fill(queues, ("b1", BAT), ("i1", INT), ("b2", BAT), ("i2", INT))
    popped = [queues.pop() for _ in range(5)]
    assert [p.task_id if p else None for p in popped] == ["i1", "i2", "b1", "b2", None]
    assert len(queues) == 0


def test_remove() -> None:
    queues = PoolQueues(4, FullPolicy.REJECT)
    fill(queues, ("i1", INT), ("b1", BAT), ("b2", BAT))
    assert queues.remove("b1") is True
    assert queues.remove("b1") is False
    assert queues.remove("ghost") is False
    assert ids(queues) == ["i1", "b2"]
    assert queues.position("b2") == 1
    assert len(queues) == 2
    assert queues.offer(item("b1", BAT)) == Admitted(2)


@pytest.mark.parametrize(
    ("ahead", "slots", "mean", "expected"),
    [
        (0, 1, None, 1000),
        (3, 1, None, 4000),
        (3, 2, 500.0, 1000),
        (4, 2, 500.0, 1500),
        (0, 0, 250.0, 250),
        (0, 1, 333.3, 334),
        (0, 1, 10.0, 100),
        (0, 1, 0.0, 100),
        (10**6, 1, 1000.0, 600_000),
        (0, 1, float("nan"), 1000),
    ],
)
def test_retry_after_ms(ahead: int, slots: int, mean: float | None, expected: int) -> None:
    assert retry_after_ms(ahead, slots, mean) == expected


def test_policy_accepts_its_config_spelling_and_rejects_unknown() -> None:
    queues = PoolQueues(1, FullPolicy.REJECT)
    queues.policy = "drop-lru"
    assert queues.policy is FullPolicy.DROP_LRU
    with pytest.raises(ValueError, match='one of "reject", "drop-lru"'):
        queues.policy = "drop-oldest"
