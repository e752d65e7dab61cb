"""Bounded two-priority queues per pool, and the Retry-After backoff of a full one.

Everything here is pure or owned-mutable: no clock reads (times are passed in),
no logging, no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from app.orchestrator.contracts import Priority

DEFAULT_SERVICE_MS = 1000.0
"""Assumed service time of one task before any has been measured."""

RETRY_AFTER_MIN_MS = 100
RETRY_AFTER_MAX_MS = 600_000


class FullPolicy(StrEnum):
    """What a full queue does with a newcomer."""

    REJECT = "reject"
    DROP_LRU = "drop-lru"


@dataclass(frozen=True, slots=True)
class QueuedItem:
    """One task waiting in a pool's queue."""

    task_id: str
    priority: Priority
    enqueued_at: float


@dataclass(frozen=True, slots=True)
class Admitted:
    """The newcomer is queued at ``position`` (0-based, dequeue order).

    ``dropped`` is the batch item evicted to make room under drop-lru, if any.
    """

    position: int
    dropped: QueuedItem | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The newcomer was not queued; ``message`` says why and what to do."""

    reason: str
    policy_label: str
    message: str


def _check_capacity(capacity: int) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(
            f"queue capacity must be a whole number >= 1, got {capacity!r}; "
            "fix [admission] queue_capacity"
        )
    return capacity


def _check_policy(policy: FullPolicy | str) -> FullPolicy:
    try:
        return FullPolicy(policy)
    except ValueError:
        choices = ", ".join(f'"{p.value}"' for p in FullPolicy)
        raise ValueError(
            f"unknown queue full policy {policy!r}; set [admission] full_policy to one of {choices}"
        ) from None


class PoolQueues:
    """Bounded FIFO per priority for one pool. Mutable; owned by one caller.

    No I/O; no method blocks. ``capacity`` applies to each priority separately.
    Changing ``capacity`` or ``policy`` takes effect for the next ``offer``;
    shrinking the capacity never drops queued items, it refuses newcomers until
    the queue is below it.
    """

    def __init__(self, capacity: int, policy: FullPolicy, *, pool_id: str | None = None) -> None:
        """Raises ``ValueError`` when ``capacity`` is not a whole number >= 1 or
        ``policy`` is unknown. ``pool_id`` names the pool in refusal messages."""
        self._capacity = _check_capacity(capacity)
        self._policy = _check_policy(policy)
        self.pool_id = pool_id
        self._queues: dict[Priority, deque[QueuedItem]] = {
            Priority.INTERACTIVE: deque(),
            Priority.BATCH: deque(),
        }
        self._ids: set[str] = set()

    @property
    def capacity(self) -> int:
        """The most items each priority may hold."""
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._capacity = _check_capacity(value)

    @property
    def policy(self) -> FullPolicy:
        """What a full queue does with a newcomer."""
        return self._policy

    @policy.setter
    def policy(self, value: FullPolicy | str) -> None:
        self._policy = _check_policy(value)

    def offer(self, item: QueuedItem) -> Admitted | Refused:
        """Queue ``item`` unless its priority's queue is full.

        Returns ``Admitted`` (with the evicted oldest batch item under drop-lru
        when a batch newcomer found the batch queue full) or ``Refused``.
        Interactive items are never evicted. Raises ``ValueError`` when the
        task id is already queued. Non-blocking.
        """
        if item.task_id in self._ids:
            raise ValueError(f"task {item.task_id} is already queued for this pool")
        queue = self._queues[item.priority]
        dropped: QueuedItem | None = None
        if len(queue) >= self._capacity:
            evictable = (
                self.policy is FullPolicy.DROP_LRU
                and item.priority is Priority.BATCH
                and len(queue) == self._capacity
            )
            if not evictable:
                return self._refusal(item.priority, len(queue))
            dropped = queue.popleft()
            self._ids.discard(dropped.task_id)
        queue.append(item)
        self._ids.add(item.task_id)
        return Admitted(self._position_of_last(item.priority), dropped)

    def pop(self) -> QueuedItem | None:
        """Remove and return the next item (interactive first, FIFO within a class)."""
        for priority in (Priority.INTERACTIVE, Priority.BATCH):
            queue = self._queues[priority]
            if queue:
                item = queue.popleft()
                self._ids.discard(item.task_id)
                return item
        return None

    def remove(self, task_id: str) -> bool:
        """Remove the queued task ``task_id``; returns True if it was queued. O(n)."""
        if task_id not in self._ids:
            return False
        for queue in self._queues.values():
            for item in queue:
                if item.task_id == task_id:
                    queue.remove(item)
                    self._ids.discard(task_id)
                    return True
        return False

    def position(self, task_id: str) -> int | None:
        """Return the 0-based dequeue position of ``task_id``, or None if not queued."""
        if task_id not in self._ids:
            return None
        for index, item in enumerate(self.items()):
            if item.task_id == task_id:
                return index
        return None

    def depth(self, priority: Priority | None = None) -> int:
        """Return the number of queued items of ``priority`` (all when None)."""
        if priority is None:
            return len(self._ids)
        return len(self._queues[priority])

    def items(self) -> tuple[QueuedItem, ...]:
        """Return every queued item in dequeue order."""
        return (*self._queues[Priority.INTERACTIVE], *self._queues[Priority.BATCH])

    def __len__(self) -> int:
        return len(self._ids)

    def _position_of_last(self, priority: Priority) -> int:
        if priority is Priority.INTERACTIVE:
            return len(self._queues[Priority.INTERACTIVE]) - 1
        return len(self._ids) - 1

    def _refusal(self, priority: Priority, depth: int) -> Refused:
        where = f"pool {self.pool_id} ({priority})" if self.pool_id else f"this pool ({priority})"
        note = ""
        if self.policy is FullPolicy.DROP_LRU and priority is Priority.INTERACTIVE:
            note = "interactive tasks are never dropped; "
        message = (
            f"queue for {where} is full: {depth} of {self._capacity}; "
            f"{note}retry later or raise [admission] queue_capacity"
        )
        return Refused("queue_full", self.policy.value, message)


def retry_after_ms(queued_ahead: int, slots: int, mean_service_ms: float | None) -> int:
    """Return how long to wait (ms) before the queue has room for one more item.

    ceil((queued_ahead + 1) / max(slots, 1)) * mean_service_ms, using 1000 ms
    per item when nothing was measured yet; clamped to [100, 600000]. Pure.
    """
    service = DEFAULT_SERVICE_MS
    if mean_service_ms is not None and math.isfinite(mean_service_ms):
        service = max(mean_service_ms, 0.0)
    rounds = -(-(max(queued_ahead, 0) + 1) // max(slots, 1))
    estimate = math.ceil(rounds * service)
    return min(max(estimate, RETRY_AFTER_MIN_MS), RETRY_AFTER_MAX_MS)
