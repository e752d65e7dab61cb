"""Task deadlines (``deadline_ms``): the admission-time check and the words of a miss.

Pure: no clock reads, no logging, no I/O. A deadline counts from admission.
At admission a task is refused with DEADLINE_UNMET only when the pool's
measured performance predicts a miss; a pool with no measurements yet admits
it, and the deadline is then enforced while the task is queued or running.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.orchestrator.guardrails import GuardrailRefusal


@dataclass(frozen=True, slots=True)
class PoolPace:
    """What a pool has measured: mean service time, first-token time, tokens/s (None = unknown)."""

    slots: int
    busy: int
    service_ms: float | None
    first_token_ms: float | None
    tokens_per_s: float | None


def predicted_finish_ms(pace: PoolPace, position: int, expected_tokens: int) -> float | None:
    """Return the predicted ms from admission to the last token of a task queued at
    ``position`` (0-based), or None when the pool has measured too little to say."""
    tps, first = pace.tokens_per_s, pace.first_token_ms
    if tps is None or first is None or not tps > 0 or not math.isfinite(tps + first):
        return None
    slots = max(1, pace.slots)
    waiting = position if pace.busy < slots else position + 1
    rounds = math.ceil(waiting / slots) if waiting else 0
    per_task = pace.service_ms if pace.service_ms is not None else first
    return rounds * per_task + first + expected_tokens / tps * 1000.0


def check_deadline(
    deadline_ms: int | None, predicted_ms: float | None, pool_id: str
) -> GuardrailRefusal | None:
    """Return a DEADLINE_UNMET refusal when ``predicted_ms`` exceeds ``deadline_ms``, else None.

    No deadline or no prediction never refuses.
    """
    if deadline_ms is None or predicted_ms is None or predicted_ms <= deadline_ms:
        return None
    return GuardrailRefusal(
        "deadline",
        f"deadline_ms {deadline_ms} cannot be met: pool {pool_id} predicts the task ends "
        f"in ~{math.ceil(predicted_ms)} ms; raise deadline_ms, lower max_tokens, or retry "
        "when the queue is shorter",
    )


def deadline_passed_message(deadline_ms: int, while_: str, tokens: int) -> str:
    """Return the error message of a task whose deadline passed while ``while_``
    ("queued" or "running") after ``tokens`` delivered tokens."""
    return (
        f"deadline_ms {deadline_ms} passed while the task was {while_} "
        f"({tokens} tokens delivered); raise deadline_ms or retry when the pool is less busy"
    )
