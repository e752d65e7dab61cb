"""Exceptions the facade raises; the API maps each to one status and envelope."""

from __future__ import annotations

from app.orchestrator.contracts import ErrorCode, ErrorEnvelope


class OrchError(Exception):
    """A refusal or failure with a stable taxonomy code.

    ``status`` is the HTTP status the API answers with; ``envelope()`` returns
    the body. Messages never contain stack traces, file paths or secrets.
    """

    status = 500

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        status: int | None = None,
        pool_id: str | None = None,
        engine: str | None = None,
        retriable: bool | None = None,
        retry_after_ms: int | None = None,
        policy_label: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message
        if status is not None:
            self.status = status
        self.pool_id = pool_id
        self.engine = engine
        self.retriable = retriable
        self.retry_after_ms = retry_after_ms
        self.policy_label = policy_label

    def envelope(self) -> ErrorEnvelope:
        """Return the error body as the wire model."""
        return ErrorEnvelope(
            code=self.code,
            message=self.message,
            engine=self.engine,
            pool_id=self.pool_id,
            retriable=self.retriable,
            retry_after_ms=self.retry_after_ms,
            policy_label=self.policy_label,
        )


class InvalidParams(OrchError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_PARAMS, message, status=400, retriable=False)


class Unsupported(InvalidParams):
    """400: a request field no candidate pool's engine can honour (``param`` names it)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class LimitRefused(OrchError):
    """400 ADMISSION_REJECT: a guardrail refused the task before placement; ``limit``
    names it (ctx, turns, tokens_budget, time_budget or cost_budget)."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(ErrorCode.ADMISSION_REJECT, message, status=400)
        self.limit = limit


class NotFound(OrchError):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__("NOT_FOUND", f"{what} '{ident}' not found", status=404, retriable=False)


class Conflict(OrchError):
    def __init__(self, message: str) -> None:
        super().__init__("CONFLICT", message, status=409, retriable=False)


class QueueFull(OrchError):
    """429: the target queue is full; ``retry_after_ms`` is an estimate.

    The code is QUEUE_FULL_DROP_LRU under the drop-lru policy, else ADMISSION_REJECT."""

    def __init__(
        self, message: str, *, pool_id: str, engine: str, retry_after_ms: int, policy_label: str
    ) -> None:
        code = (
            ErrorCode.QUEUE_FULL_DROP_LRU
            if policy_label == "drop-lru"
            else ErrorCode.ADMISSION_REJECT
        )
        super().__init__(
            code,
            message,
            status=429,
            pool_id=pool_id,
            engine=engine,
            retriable=True,
            retry_after_ms=retry_after_ms,
            policy_label=policy_label,
        )


class ShuttingDown(OrchError):
    def __init__(self) -> None:
        super().__init__(
            ErrorCode.POOL_UNAVAILABLE,
            "the server is shutting down and admits no new tasks",
            status=503,
            retriable=True,
            retry_after_ms=5000,
        )
