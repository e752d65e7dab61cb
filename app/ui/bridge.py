"""The one object through which the window reaches the core.

``OrchestratorBridge`` turns the facade's observer callbacks into Qt signals and
offers async commands for the widgets (run on the shared qasync loop). Widgets
receive a bridge in their constructor, so tests can pass ``FakeBridge``-style
objects with the same signals and methods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from PySide6.QtCore import QObject, QTimer, Signal

from app.orchestrator.contracts import (
    AdmissionResponse,
    DecisionRecord,
    PoolView,
    ReloadResult,
    SessionInfo,
    TaskRequest,
    TaskView,
)
from app.orchestrator.events import CoreEvent, PoolChanged, TaskChanged, TaskEvent
from app.orchestrator.ports import GpuInventory
from app.orchestrator.service import Orchestrator

log = logging.getLogger("llama_orch.ui")


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

    async def apply_settings(self, settings: Any) -> None:
        """Validate, save atomically (worker thread) and apply ``settings``: re-bind
        the API server and update admission limits. Raises ValueError with the
        reason when refused (nothing is changed then)."""


class OrchestratorBridge(QObject):
    """Qt face of the orchestrator. Signals carry immutable views; never per token."""

    taskChanged = Signal(object)  # TaskView
    poolChanged = Signal(object)  # PoolView
    decisionMade = Signal(object)  # DecisionRecord
    gpuChanged = Signal(object)  # GpuInventory
    errorRaised = Signal(str)  # one place where async-slot failures surface
    sampled = Signal(object)  # CoreSample, 1 Hz

    def __init__(
        self,
        orch: Orchestrator,
        controls: AppControls,
        parent: QObject | None = None,
        sample_interval_ms: int = 1000,
    ) -> None:
        super().__init__(parent)
        self.orch = orch
        self.controls = controls
        self._background: set[asyncio.Task[Any]] = set()
        self._unsubscribe = orch.subscribe(self._on_core_event)
        self._timer = QTimer(self)
        self._timer.setInterval(sample_interval_ms)
        self._timer.timeout.connect(self._sample)
        self._timer.start()

    # ---- events from the core --------------------------------------------------

    def _on_core_event(self, event: CoreEvent) -> None:
        if isinstance(event, TaskChanged):
            self.taskChanged.emit(event.view)
        elif isinstance(event, PoolChanged):
            self.poolChanged.emit(event.view)
        else:
            self.decisionMade.emit(event.record)

    def _sample(self) -> None:
        try:
            sample = CoreSample.take(self.orch)
        except Exception as exc:  # a sampling failure must not kill the timer
            self.report_error(f"sampling failed: {exc}")
            return
        self.gpuChanged.emit(sample.gpu)
        self.sampled.emit(sample)

    def close(self) -> None:
        """Stop sampling and unsubscribe from the core."""
        self._timer.stop()
        self._unsubscribe()

    # ---- queries (synchronous, cheap) -------------------------------------------

    def pools(self) -> list[PoolView]:
        return self.orch.pool_views()

    def tasks(self, limit: int = 200) -> list[TaskView]:
        return self.orch.tasks(limit)

    def decisions(self, limit: int = 100) -> list[DecisionRecord]:
        return self.orch.recent_decisions(limit)

    def decision_for(self, task_id: str) -> DecisionRecord | None:
        """Return the placement decision of ``task_id``, or None once forgotten."""
        return self.orch.decision_for(task_id)

    def gpu(self) -> GpuInventory:
        return self.orch.gpu_inventory()

    def session(self, session_id: str) -> SessionInfo | None:
        try:
            return self.orch.session(session_id)
        except Exception:
            return None

    # ---- commands ---------------------------------------------------------------

    def submit(self, req: TaskRequest) -> AdmissionResponse:
        """Admit a task as the local GUI user. Raises OrchError subclasses."""
        return self.orch.submit(req, identity="gui")

    async def stream(self, task_id: str) -> AsyncIterator[TaskEvent]:
        """Yield the task's events (started, token*, metrics, end | error)."""
        async for event in self.orch.stream(task_id):
            yield event

    def cancel(self, task_id: str) -> None:
        self.orch.cancel(task_id)

    def drain(self, pool_id: str, deadline_ms: int = 30_000) -> None:
        self.orch.drain(pool_id, deadline_ms)

    def resume(self, pool_id: str) -> None:
        self.orch.resume(pool_id)

    def drain_all(self) -> None:
        for pid in self.orch.pool_ids():
            self.orch.drain(pid, 3_600_000)

    def resume_all(self) -> None:
        for pid in self.orch.pool_ids():
            self.orch.resume(pid)

    async def reload(self, pool_id: str, model_ref: str) -> ReloadResult:
        return await self.orch.reload(pool_id, model_ref)

    async def restart(self, pool_id: str) -> None:
        await self.orch.restart(pool_id)

    # ---- background work with one error sink --------------------------------------

    def run(self, coro: Awaitable[Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` on the loop, keep a strong reference, and report a failure
        through ``errorRaised`` (status bar + log). Returns the task."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(lambda t: self._done(t, what))
        return task

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.report_error(f"{what} failed: {exc}")

    def report_error(self, message: str) -> None:
        """Surface an error in the status bar and the log."""
        log.error(message)
        self.errorRaised.emit(message)


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
        """Read the facade's counters; cheap, never blocks."""
        return cls(
            at=orch.clock.monotonic(),
            pools=orch.pool_views(),
            gpu=orch.gpu_inventory(),
            counters=dict(orch.counters),
            tokens_out=orch.tokens_out_by_pool(),
            ttfts=orch.recent_ttfts(),
        )
