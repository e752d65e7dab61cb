"""The record of one task: its request, lifecycle, channel and timings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.orchestrator.contracts import (
    ErrorCode,
    ErrorPayload,
    FinishReason,
    TaskRequest,
    TaskView,
)
from app.orchestrator.events import END, ERROR, EndEvent, ErrorData, ErrorEvent, EventChannel
from app.orchestrator.lifecycle import StateMachine, TaskState, task_lifecycle


@dataclass(slots=True)
class TaskRecord:
    """One task. Its runner (one asyncio task) is the only writer once dispatched."""

    task_id: str
    request: TaskRequest
    pool_id: str
    engine: str
    engine_version: str
    identity: str
    correlation_id: str
    channel: EventChannel
    created_at: float  # epoch seconds, for display
    created_mono: float
    tokens_in: int
    decision_summary: str = ""
    api: str = "orchqueue"
    lifecycle: StateMachine[TaskState] = field(default_factory=task_lifecycle)
    queue_position_at_admission: int = 0
    predicted_start_ms: int = 0
    dispatched_mono: float | None = None
    first_token_mono: float | None = None
    finished_mono: float | None = None
    tokens_out: int = 0  # tokens delivered (after a cancel: only those the reader took)
    finish_reason: FinishReason | None = None
    error: ErrorPayload | None = None
    runner: asyncio.Task[None] | None = None
    reader_attached: bool = False
    unopened_timer: asyncio.TimerHandle | None = None
    deadline_timer: asyncio.TimerHandle | None = None
    # set when the stream is opened or the start grace passes: decoding waits for it
    start_gate: asyncio.Event = field(default_factory=asyncio.Event)
    kv_warm: bool = False
    artifact_id: str | None = None  # the transcript artifact, once stored

    @property
    def state(self) -> TaskState:
        return self.lifecycle.state

    def end_event(self, reason: FinishReason, now: float) -> EndEvent:
        """Return the ``end`` event, stamping ``now`` as the finish time if unset."""
        if self.finished_mono is None:
            self.finished_mono = now
        decode_ms = self.decode_time_ms() or 0
        return EndEvent(
            END,
            {
                "tokens_out": self.tokens_out,
                "decode_time_ms": decode_ms,
                "decode_ms": decode_ms,
                "finish_reason": reason.value,
            },
        )

    def stop_timers(self) -> None:
        """Cancel the unopened-stream and deadline timers. Never blocks."""
        for timer in (self.unopened_timer, self.deadline_timer):
            if timer is not None:
                timer.cancel()
        self.unopened_timer = self.deadline_timer = None

    def error_event(self, code: ErrorCode, message: str, *, retriable: bool) -> ErrorEvent:
        """Record ``error`` on the task and return its ``error`` event."""
        self.error = ErrorPayload(
            code=code,
            message=message,
            engine=self.engine,
            pool_id=self.pool_id,
            retriable=retriable,
            retry_after_ms=1000 if retriable else None,
        )
        e = self.error
        data: ErrorData = {
            "code": e.code.value,
            "message": e.message,
            "engine": e.engine,
            "pool_id": e.pool_id,
            "retriable": e.retriable,
            "retry_after_ms": e.retry_after_ms,
        }
        return ErrorEvent(ERROR, data)

    def decode_time_ms(self) -> int | None:
        """Return ms from first token to finish (or now-less: None while unknown)."""
        if self.first_token_mono is None or self.finished_mono is None:
            return None
        return int((self.finished_mono - self.first_token_mono) * 1000)

    def ttft_ms(self) -> int | None:
        """Return ms from dispatch to the first token, None before it."""
        if self.first_token_mono is None or self.dispatched_mono is None:
            return None
        return int((self.first_token_mono - self.dispatched_mono) * 1000)

    def first_token_since_admission_ms(self) -> int | None:
        """Return ms from admission to the first token (queue wait included), None before it."""
        if self.first_token_mono is None:
            return None
        return int((self.first_token_mono - self.created_mono) * 1000)

    def view(self, queue_position: int | None) -> TaskView:
        """Return the public view of the task."""
        queued_ms = None
        if self.dispatched_mono is not None:
            queued_ms = int((self.dispatched_mono - self.created_mono) * 1000)
        return TaskView(
            task_id=self.task_id,
            state=self.state,
            priority=self.request.priority,
            pool_id=self.pool_id,
            session_id=self.request.session_id,
            identity=self.identity,
            correlation_id=self.correlation_id,
            created_at=self.created_at,
            queue_position=queue_position,
            queued_ms=queued_ms,
            ttft_ms=self.ttft_ms(),
            decode_time_ms=self.decode_time_ms(),
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            finish_reason=self.finish_reason,
            error=self.error,
            decision_summary=self.decision_summary,
            api=self.api,
            prompt_start=prompt_start(self.request),
            artifact_id=self.artifact_id,
        )


PROMPT_START_CHARS = 60


def prompt_start(req: TaskRequest) -> str:
    """Return the first words of the prompt, or of the last user message. Pure."""
    text = req.prompt
    if text is None:
        users = [m.content for m in req.messages or () if m.role == "user"]
        text = users[-1] if users else ""
    words = " ".join(text[: PROMPT_START_CHARS * 4].split())
    if len(words) <= PROMPT_START_CHARS:
        return words
    return words[: PROMPT_START_CHARS - 1].rstrip() + "…"
