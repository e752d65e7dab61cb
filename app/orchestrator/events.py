"""The core's events: per-task stream events on a bounded channel, and the
change notifications observers receive.

Task events travel on an ``EventChannel``: bounded, with race-free cancel and one terminal event.

The hot path builds plain ``TaskEvent`` tuples; rendering to SSE bytes happens
in the API layer with ``json.dumps``. ``token`` events are never dropped (the
producer waits for room); ``metrics`` events are dropped when the channel is
full; exactly one terminal event (``end`` or ``error``) is ever delivered.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, NotRequired, TypedDict

from app.orchestrator.contracts import DecisionRecord, PoolView, TaskView

STARTED: Final = "started"
TOKEN: Final = "token"
METRICS: Final = "metrics"
END: Final = "end"
ERROR: Final = "error"
TERMINAL_KINDS: frozenset[str] = frozenset({END, ERROR})


# ---- the payload of each task event (the JSON of its SSE ``data:`` line) ----


class StartedData(TypedDict):
    queue_position: int
    predicted_start_ms: int
    pool_id: str
    correlation_id: str


class TokenData(TypedDict):
    t: str
    i: int
    x: NotRequired[Mapping[str, Any]]
    """Only when the engine sent tool-call fragments or logprobs with this token."""


class MetricsData(TypedDict):
    queue_depth: int
    on_time_probability: float | None
    kv_warmth: bool
    tokens_budget_remaining: int | None
    time_budget_remaining_ms: int | None
    cost_budget_remaining: float | None


class EndData(TypedDict):
    tokens_out: int
    decode_time_ms: int
    decode_ms: int
    finish_reason: str


class ErrorData(TypedDict):
    code: str
    message: str
    engine: str | None
    pool_id: str | None
    retriable: bool
    retry_after_ms: int | None


# ---- task events: the SSE ``event:`` name and its payload ----
# Comparing ``event.kind`` with one of the kind constants narrows a TaskEvent
# to its class (and ``event.data`` to its payload) for the type checker.


class StartedEvent(NamedTuple):
    kind: Literal["started"]
    data: StartedData


class TokenEvent(NamedTuple):
    kind: Literal["token"]
    data: TokenData


class MetricsEvent(NamedTuple):
    kind: Literal["metrics"]
    data: MetricsData


class EndEvent(NamedTuple):
    kind: Literal["end"]
    data: EndData


class ErrorEvent(NamedTuple):
    kind: Literal["error"]
    data: ErrorData


TaskEvent = StartedEvent | TokenEvent | MetricsEvent | EndEvent | ErrorEvent
"""One event of a task's stream."""

TerminalEvent = EndEvent | ErrorEvent
"""The one event that ends a task's stream."""


class EventChannel:
    """A bounded single-producer, single-consumer queue of TaskEvents.

    Owned by one task's runner (producer) and read by at most one stream
    reader. ``close`` appends the terminal event even when the channel is full
    and turns every later ``put``/``offer`` into a no-op.
    """

    __slots__ = ("_cap", "_closed", "_items", "_readable", "_writable", "tokens_taken")

    def __init__(self, cap: int) -> None:
        self._cap = max(1, cap)
        self._items: deque[TaskEvent] = deque()
        self._closed = False
        self.tokens_taken = 0
        """How many ``token`` events the reader has taken (delivered tokens)."""
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def closed(self) -> bool:
        """Return True once the terminal event was appended."""
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, event: TaskEvent) -> bool:
        """Append a must-deliver event, waiting while the channel is full.

        Returns False (and drops the event) when the channel is or becomes
        closed. Blocks (awaits) only while the reader lags by ``cap`` events.
        """
        while len(self._items) >= self._cap and not self._closed:
            self._writable.clear()
            await self._writable.wait()
        return self.offer_unbounded(event)

    def offer(self, event: TaskEvent) -> bool:
        """Append a droppable event; returns False when full or closed. Never blocks."""
        if len(self._items) >= self._cap:
            return False
        return self.offer_unbounded(event)

    def offer_unbounded(self, event: TaskEvent) -> bool:
        """Append ignoring the cap (used for ``started``); False when closed."""
        if self._closed:
            return False
        self._items.append(event)
        self._readable.set()
        return True

    def close(self, terminal: TerminalEvent) -> bool:
        """Append ``terminal`` and close. Returns False if already closed."""
        if self._closed:
            return False
        self._items.append(terminal)
        self._closed = True
        self._readable.set()
        self._writable.set()
        return True

    def cancel(self, terminal: TerminalEvent) -> bool:
        """Discard undelivered ``token``/``metrics`` events, then ``close``.

        After this returns, the reader sees no further token: only what was
        already read, any pending ``started``, and ``terminal``. Returns False
        if the channel was already closed.
        """
        if self._closed:
            return False
        kept = [e for e in self._items if e.kind not in (TOKEN, METRICS)]
        self._items.clear()
        self._items.extend(kept)
        return self.close(terminal)

    async def get(self) -> TaskEvent | None:
        """Return the next event, waiting for one; None after the terminal event."""
        while not self._items:
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        return self._take()

    def get_nowait(self) -> TaskEvent | None:
        """Return the next event if one is buffered, else None. Never blocks."""
        if not self._items:
            return None
        return self._take()

    def _take(self) -> TaskEvent:
        event = self._items.popleft()
        if event.kind == TOKEN:
            self.tokens_taken += 1
        if len(self._items) < self._cap:
            self._writable.set()
        return event


# ---- change notifications for observers (never per token) ----


@dataclass(frozen=True, slots=True)
class TaskChanged:
    """A task was admitted, started, finished or moved in its queue."""

    view: TaskView


@dataclass(frozen=True, slots=True)
class PoolChanged:
    """A pool's state, model, drain flag or queue changed."""

    view: PoolView


@dataclass(frozen=True, slots=True)
class DecisionMade:
    """Placement decided (or refused) a task."""

    record: DecisionRecord


CoreEvent = TaskChanged | PoolChanged | DecisionMade
"""What ``Orchestrator.subscribe`` observers receive."""
