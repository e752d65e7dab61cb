"""The core's two effects on the outside world: task-log lines and quiet stream closes.

``log`` is the core's logger; ``log_task`` writes one structured line per task
event: at INFO the task's end (and the rare events: a move to another pool, a
deadline, an unopened stream), at DEBUG the steps every task takes (admitted,
dispatched), so a task costs one INFO line; ``close_quietly`` closes an engine
stream without raising.
"""

from __future__ import annotations

import logging

from app.orchestrator.ports import EngineStream
from app.orchestrator.tasks import TaskRecord

log = logging.getLogger("llama_orch.core")


async def close_quietly(stream: EngineStream) -> None:
    """Close an engine stream, logging (at debug) instead of raising on failure."""
    try:
        await stream.aclose()
    except Exception:
        log.debug("engine stream close failed", exc_info=True)


def log_task(rec: TaskRecord, event: str, human: str, level: int = logging.INFO) -> None:
    """Write one structured task-log line for ``rec`` at ``level`` (nothing is built
    when the level is off). Never raises, never blocks beyond the log handlers."""
    if not log.isEnabledFor(level):
        return
    log.log(
        level,
        human,
        extra={
            "event": event,
            "human": human,
            "fields": {
                "job_id": rec.task_id,
                "session_id": rec.request.session_id,
                "engine": rec.engine,
                "engine_version": rec.engine_version,
                "pool_id": rec.pool_id,
                "replica_id": rec.pool_id,
                "queue_position": rec.queue_position_at_admission,
                "predicted_start_ms": rec.predicted_start_ms,
                "tokens_in": rec.tokens_in,
                "tokens_out": rec.tokens_out,
                "decode_time_ms": rec.decode_time_ms(),
                "correlation_id": rec.correlation_id,
                "identity": rec.identity,
            },
        },
    )
