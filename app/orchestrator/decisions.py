"""A bounded ring of recent placement decisions, as wire records."""

from __future__ import annotations

from collections import deque

from app.orchestrator.contracts import CandidateRecord, DecisionRecord, TaskRequest
from app.orchestrator.placement import DecisionLog


class DecisionBook:
    """The most recent ``capacity`` decisions, newest last. Owned by the facade."""

    def __init__(self, capacity: int = 256) -> None:
        self._ring: deque[DecisionRecord] = deque(maxlen=max(1, capacity))

    def add(self, at: float, task_id: str, req: TaskRequest, log: DecisionLog) -> DecisionRecord:
        """Record one decision and return its wire record."""
        record = DecisionRecord(
            at=at,
            task_id=task_id,
            priority=req.priority,
            mode=req.placement.mode,
            selected_pool_id=log.selected_pool_id,
            no_capacity_reason=log.no_capacity_reason,
            candidates_considered=log.candidates_considered,
            filters_applied=list(log.filters_applied),
            tie_breakers_applied=list(log.tie_breakers_applied),
            pinned=log.pinned,
            fallback_used=log.fallback_used,
            summary=log.summary,
            candidates=[
                CandidateRecord(
                    pool_id=c.pool_id,
                    outcome=c.outcome,
                    reason=c.reason,
                    filter=c.filter,
                    predicted_end_ms=c.predicted_end_ms,
                )
                for c in log.candidates
            ],
        )
        self._ring.append(record)
        return record

    def recent(self, limit: int = 50) -> list[DecisionRecord]:
        """Return up to ``limit`` decisions, newest first."""
        items = list(self._ring)[-max(0, limit) :] if limit > 0 else []
        return list(reversed(items))

    def __len__(self) -> int:
        return len(self._ring)
