"""A bounded ring of recent placement decisions, as wire records.

A decision is recorded once admission knows its outcome: admitted (the pool's
queue took the task) or refused (no pool could take it, its queue was full, or
its deadline could not be met), so a 429 never shows as a selected pool.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from app.orchestrator.contracts import CandidateRecord, DecisionRecord, TaskRequest
from app.orchestrator.placement import CandidateNote, DecisionLog
from app.orchestrator.tasks import prompt_start


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why admission refused a placed (or unplaceable) task."""

    code: str
    reason: str
    message: str


class DecisionBook:
    """The most recent ``capacity`` decisions, newest last. Owned by the facade."""

    def __init__(self, capacity: int = 256) -> None:
        self._ring: deque[DecisionRecord] = deque(maxlen=max(1, capacity))
        self._by_task: dict[str, DecisionRecord] = {}

    def add(
        self,
        at: float,
        task_id: str,
        req: TaskRequest,
        log: DecisionLog,
        refusal: Refusal | None = None,
    ) -> DecisionRecord:
        """Record one decision with its admission outcome and return its wire record.

        ``refusal`` None means the task was queued on ``log.selected_pool_id``.
        Never blocks.
        """
        chosen = log.selected_pool_id
        summary = log.summary
        if refusal is not None:
            summary = "; ".join(x for x in (f"refused: {refusal.message}", log.summary) if x)
        record = DecisionRecord(
            at=at,
            task_id=task_id,
            priority=req.priority,
            mode=req.placement.mode,
            outcome="admitted" if refusal is None else "refused",
            pool_id=chosen if refusal is None else None,
            refusal_code=None if refusal is None else refusal.code,
            refusal_reason=None if refusal is None else refusal.reason,
            selected_pool_id=chosen,
            no_capacity_reason=log.no_capacity_reason,
            deciding_key=log.deciding_key,
            candidates_considered=log.candidates_considered,
            filters_applied=list(log.filters_applied),
            tie_breakers_applied=list(log.tie_breakers_applied),
            pinned=log.pinned,
            fallback_used=log.fallback_used,
            summary=summary,
            candidates=[_candidate(c, refusal) for c in log.candidates],
            prompt_start=prompt_start(req),
        )
        if len(self._ring) == self._ring.maxlen:
            oldest = self._ring[0]
            if self._by_task.get(oldest.task_id) is oldest:
                del self._by_task[oldest.task_id]
        self._ring.append(record)
        self._by_task[task_id] = record
        return record

    def recent(self, limit: int = 50) -> list[DecisionRecord]:
        """Return up to ``limit`` decisions, newest first."""
        items = list(self._ring)[-max(0, limit) :] if limit > 0 else []
        return list(reversed(items))

    def latest_for(self, task_id: str) -> DecisionRecord | None:
        """Return the newest decision still kept about ``task_id``, or None. O(1)."""
        return self._by_task.get(task_id)

    def __len__(self) -> int:
        return len(self._ring)


def _candidate(note: CandidateNote, refusal: Refusal | None) -> CandidateRecord:
    refused = refusal is not None and note.outcome == "selected"
    return CandidateRecord(
        pool_id=note.pool_id,
        outcome="refused" if refused else note.outcome,
        reason=f"{refusal.message} ({note.reason})" if refusal and refused else note.reason,
        filter=note.filter,
        predicted_end_ms=note.predicted_end_ms,
        rank_key=note.rank_key,
        rank=note.rank,
        vram_need_bytes=note.vram_need_bytes,
        vram_free_bytes=note.vram_free_bytes,
    )
