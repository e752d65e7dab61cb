"""Trace artifacts of finished streams: the SSE transcript a reader received and the
task's placement decision, stored off the hot path once the stream ends and linked
from ``GET /v1/tasks/{id}`` (``artifact_id``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.orchestrator.artifacts_port import ArtifactIn, ArtifactRegistry
from app.orchestrator.errors import OrchError
from app.orchestrator.service import Orchestrator

log = logging.getLogger("llama_orch.api")

# JSON escaping can double the transcript's size (quotes, newlines); this much of
# the per-artifact cap is left for it and for the decision.
RESERVED_BYTES = 16 << 10


def transcript_budget(registry: ArtifactRegistry) -> int:
    """Return how many transcript bytes fit in one artifact of ``registry``. Pure."""
    return max(0, (registry.max_artifact_bytes - RESERVED_BYTES) // 2)


def trace_artifact(
    task_id: str, transcript: list[bytes], truncated: bool, decision: dict[str, Any] | None
) -> ArtifactIn:
    """Return the trace artifact of one finished stream. Pure."""
    return ArtifactIn(
        kind="trace",
        content={
            "task_id": task_id,
            "transcript": b"".join(transcript).decode("utf-8", "replace"),
            "truncated": truncated,
            "decision": decision,
        },
        tags=["task-transcript"],
        metadata={"task_id": task_id},
    )


class TranscriptArchive:
    """Stores the transcripts of finished streams in ``registry`` and links them to
    their tasks in ``orch``. One background task per stream; owned by the app."""

    def __init__(self, orch: Orchestrator, registry: ArtifactRegistry) -> None:
        self._orch = orch
        self._registry = registry
        self.budget = transcript_budget(registry)
        self._pending: set[asyncio.Task[None]] = set()

    def keep(self, task_id: str, transcript: list[bytes], truncated: bool) -> None:
        """Store ``transcript`` of ``task_id`` in the background. Never blocks."""
        task = asyncio.get_running_loop().create_task(self._store(task_id, transcript, truncated))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _store(self, task_id: str, transcript: list[bytes], truncated: bool) -> None:
        decision = self._orch.decision_for(task_id)
        dumped = None if decision is None else decision.model_dump(mode="json")
        artifact = trace_artifact(task_id, transcript, truncated, dumped)
        try:
            ref = await self._registry.put(artifact)
        except (OrchError, OSError) as exc:
            fields = {"job_id": task_id}
            log.warning("task transcript not stored: %s", exc, extra={"fields": fields})
            return
        self._orch.link_artifact(task_id, ref.id)

    async def flush(self) -> None:
        """Await the transcripts still being stored. Never raises."""
        if self._pending:
            await asyncio.wait(list(self._pending))
