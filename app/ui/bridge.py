"""The one interface through which the window reaches the backend: ``Bridge``.

Widgets take a ``Bridge`` in their constructor and use nothing else of the
backend. Two implementations satisfy it: ``app.ui.embedded_bridge.EmbeddedBridge``
(the backend runs on its own thread in this process) and the HTTP bridge of
``gui --connect`` (``app/client/``, the window watches a running ``serve``).
Test fakes satisfy it too (``tests/ui/fakes.py``).

Rules every implementation keeps:

- Everything here is used on the Qt thread only, and every signal is delivered
  there (queued when the backend runs elsewhere).
- Signals are coalesced: each one fires at most about 30 times a second and
  carries a batch (a tuple of the latest views changed since the previous
  emission) or a snapshot; never one emission per token.
- Snapshot queries (``pools``, ``tasks``, ``decisions``, ``gpu``) read what the
  bridge already holds: cheap, never block, never raise.
- Commands are coroutines awaited on the Qt thread's (qasync) loop. They raise
  ``app.orchestrator.errors.OrchError`` subclasses for refusals (queue full,
  unknown task, ...) and ``BackendGone`` once the backend has stopped; they
  never hang after the backend died.
- ``stream`` yields a task's events in batches (lists of ``TaskEvent``), at
  most about 30 batches a second; it ends after the terminal event. ``follow``
  delivers the same batches as plain calls on the Qt thread (the embedded
  bridge calls every followed stream's callback from its one queued delivery,
  with no asyncio task per stream); ``follow_stream`` builds it on ``stream``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal, SignalInstance

from app.orchestrator.artifacts_port import StoredArtifact
from app.orchestrator.catalog_port import ModelCatalog
from app.orchestrator.contracts import (
    AdmissionResponse,
    DecisionRecord,
    ErrorCode,
    PoolView,
    ReloadResult,
    SessionInfo,
    TaskRequest,
    TaskView,
)
from app.orchestrator.errors import OrchError
from app.orchestrator.events import TaskEvent
from app.orchestrator.ports import GpuInventory
from app.orchestrator.service import Orchestrator
from app.ui.models_client import ModelsClient

#: The most signal emissions (or stream batches) per second a view receives.
MAX_UPDATES_PER_S = 30

OnEvents = Callable[[Sequence[TaskEvent]], None]
OnEnd = Callable[[OrchError | None], None]


class BackendGone(OrchError):
    """The backend stopped (quit or crashed): commands fail at once instead of hanging."""

    def __init__(self, why: str) -> None:
        super().__init__(ErrorCode.INTERNAL, why)


class AppControls(Protocol):
    """What the composition root (app.main) lets the window do beyond the core."""

    def api_url(self) -> str:
        """Return the API's base URL, e.g. http://127.0.0.1:8080."""

    def config_path(self) -> str:
        """Return the path of the config file the app uses."""

    def log_path(self) -> str:
        """Return the path of the JSON-lines log file."""

    def current_settings(self) -> Any:
        """Return the app.config.Settings in force."""

    def model_catalog(self) -> ModelCatalog | None:
        """Return the backend's model catalog, None when it runs without one."""

    async def apply_settings(self, settings: Any) -> None:
        """Validate, save atomically (worker thread) and apply ``settings``: re-bind
        the API server and update admission limits. Raises ValueError with the
        reason when refused (nothing is changed then)."""


class Bridge(Protocol):
    #: The Models view's way to the catalog; None when the backend has none.
    models: ModelsClient | None

    """The window's view of the backend (see the module docstring for the rules)."""

    # ---- signals (Qt thread, coalesced, <= MAX_UPDATES_PER_S each) ------------------

    @property
    def tasksChanged(self) -> SignalInstance:
        """Emits ``tuple[TaskView, ...]``: the latest view of each task that changed."""

    @property
    def poolsChanged(self) -> SignalInstance:
        """Emits ``tuple[PoolView, ...]``: the latest view of each pool that changed."""

    @property
    def decisionsMade(self) -> SignalInstance:
        """Emits ``tuple[DecisionRecord, ...]``: new placement decisions, oldest first."""

    @property
    def gpuChanged(self) -> SignalInstance:
        """Emits a ``GpuInventory`` snapshot (about 1 Hz)."""

    @property
    def sampled(self) -> SignalInstance:
        """Emits a ``CoreSample`` snapshot for charts, tray and pools view (about 1 Hz)."""

    @property
    def errorRaised(self) -> SignalInstance:
        """Emits ``str``: one plain sentence about a failure, for the status bar."""

    @property
    def controls(self) -> AppControls:
        """Return the settings/URL/log controls of the app."""

    # ---- snapshots (cheap, never block) ---------------------------------------------

    def pools(self) -> list[PoolView]:
        """Return the latest view of every pool."""

    def tasks(self, limit: int = 200) -> list[TaskView]:
        """Return up to ``limit`` recent tasks, newest first."""

    def decisions(self, limit: int = 100) -> list[DecisionRecord]:
        """Return up to ``limit`` recent placement decisions, newest first."""

    def decision_for(self, task_id: str) -> DecisionRecord | None:
        """Return the placement decision of ``task_id``, or None when not known (yet)."""

    def gpu(self) -> GpuInventory:
        """Return the latest GPU inventory."""

    # ---- commands (awaited on the Qt loop) --------------------------------------------

    async def submit(self, req: TaskRequest) -> AdmissionResponse:
        """Admit a task as the local GUI user. Raises OrchError (e.g. QUEUE_FULL)."""

    def stream(self, task_id: str) -> AsyncIterator[Sequence[TaskEvent]]:
        """Yield the task's events (started, token*, metrics, end | error) in batches.
        Raises OrchError when the task cannot be streamed."""

    def follow(self, task_id: str, on_events: OnEvents, on_end: OnEnd) -> Callable[[], None]:
        """Call ``on_events(batch)`` on the Qt thread for the task's event batches (as
        ``stream`` yields them), then ``on_end(None)``, or ``on_end(error)`` when the
        stream fails. Returns a function that stops following: no call after it.
        Never blocks."""

    async def cancel(self, task_id: str) -> None:
        """Cancel a queued or running task. Raises OrchError (unknown task)."""

    async def session(self, session_id: str) -> SessionInfo | None:
        """Return the session, or None when it does not exist (expired)."""

    async def drain(self, pool_id: str, deadline_ms: int = 30_000) -> None:
        """Stop admitting to ``pool_id``; running tasks finish until the deadline."""

    async def resume(self, pool_id: str) -> None:
        """Admit to ``pool_id`` again after a drain."""

    async def drain_all(self) -> None:
        """Drain every pool (pause admissions)."""

    async def resume_all(self) -> None:
        """Resume every pool."""

    async def reload(self, pool_id: str, model_ref: str) -> ReloadResult:
        """Load ``model_ref`` on ``pool_id`` (drains first); returns the outcome."""

    async def restart(self, pool_id: str) -> None:
        """Restart the pool's engine."""

    async def pool_log(self, pool_id: str, tail_lines: int = 200) -> tuple[str | None, list[str]]:
        """Return ``(log file, last lines)`` of the pool's engine; raises OrchError."""

    async def artifact(self, artifact_id: str) -> StoredArtifact:
        """Return a stored artifact (a finished task's transcript: TaskView.artifact_id).
        Raises OrchError (unknown id, or a backend that keeps no artifacts)."""

    # ---- Qt-side helpers ----------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` on the Qt loop with a strong reference; a failure is reported
        through ``errorRaised`` as "<what> failed: <reason>". Returns the task."""

    def report_error(self, message: str) -> None:
        """Surface ``message`` in the status bar and the log."""

    def close(self) -> None:
        """Stop delivering signals (the window is closing). Never blocks."""


@dataclass(frozen=True, slots=True)
class CoreSample:
    """One 1 Hz sample of the core for the charts, tray and pools view."""

    at: float
    pools: list[PoolView]
    gpu: GpuInventory
    counters: dict[str, int]
    tokens_out: dict[str, int]
    ttfts: list[int]

    @classmethod
    def take(cls, orch: Orchestrator) -> CoreSample:
        """Read the facade's counters on the orchestrator's loop; cheap, never blocks."""
        return cls(
            at=orch.clock.monotonic(),
            pools=orch.pool_views(),
            gpu=orch.gpu_inventory(),
            counters=dict(orch.counters),
            tokens_out=orch.tokens_out_by_pool(),
            ttfts=orch.recent_ttfts(),
        )


class BridgeSignals(QObject):
    """The ``Bridge`` protocol's signals, declared once for every implementation."""

    tasksChanged = Signal(object)
    poolsChanged = Signal(object)
    decisionsMade = Signal(object)
    gpuChanged = Signal(object)
    sampled = Signal(object)
    errorRaised = Signal(str)


def follow_stream(
    bridge: Bridge, task_id: str, on_events: OnEvents, on_end: OnEnd
) -> Callable[[], None]:
    """``Bridge.follow`` on top of ``bridge.stream``: one task on the Qt loop reads the
    stream and makes the calls. A failing callback ends the stream (``on_end(None)``)
    and is reported through ``bridge.run``. Returns the stop function; never blocks."""

    async def read() -> None:
        try:
            async for batch in bridge.stream(task_id):
                on_events(batch)
        except OrchError as exc:
            on_end(exc)
            return
        except Exception:
            on_end(None)
            raise
        on_end(None)

    task = bridge.run(read(), "showing the answer")

    def stop() -> None:
        task.cancel()

    return stop


class StreamFeed:
    """One task's events between a bridge's producer and its ``stream`` reader.

    The producer calls ``push`` and, once, ``end``; the reader iterates
    ``batches()``. One object per stream, owned by the bridge that made it.
    """

    def __init__(self) -> None:
        self._events: list[TaskEvent] = []
        self._ended = False
        self._error: OrchError | None = None
        self._wake = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self._ended

    def push(self, events: Sequence[TaskEvent]) -> None:
        """Queue ``events`` for the reader. Never blocks."""
        self._events.extend(events)
        self._wake.set()

    def end(self, error: OrchError | None = None) -> None:
        """Mark the stream finished (with ``error`` if it failed). Never blocks."""
        self._ended, self._error = True, error
        self._wake.set()

    async def batches(self, min_gap_s: float = 0.0) -> AsyncIterator[list[TaskEvent]]:
        """Yield the queued events as lists, at most one list per ``min_gap_s``,
        until the stream ends. Raises the producer's error after the last batch.
        Awaits new events."""
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            await self._wake.wait()
            delay = last + min_gap_s - loop.time()
            if delay > 0 and not self._ended:
                await asyncio.sleep(delay)
            self._wake.clear()
            last = loop.time()
            events, self._events = self._events, []
            if events:
                yield events
            if self._ended:
                if self._error is not None:
                    raise self._error
                return
