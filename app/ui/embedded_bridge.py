"""``EmbeddedBridge``: the ``Bridge`` over a backend running on its own thread.

Two halves with one owner each. ``Outbox`` lives on the backend loop: the
core's observer callbacks and the task streams the window reads only append to
it, and it flushes at most ``MAX_UPDATES_PER_S`` times a second as one queued
Qt signal carrying a ``Batch``. ``EmbeddedBridge`` lives on the Qt thread: it
keeps the snapshot caches the widgets query, re-emits each batch as the
``Bridge`` signals, and sends commands over with ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot

from app.orchestrator.artifacts_port import ArtifactRegistry, StoredArtifact
from app.orchestrator.catalog_port import ModelCatalog
from app.orchestrator.contracts import (
    AdmissionResponse,
    DecisionRecord,
    PoolView,
    ReloadResult,
    SessionInfo,
    TaskRequest,
    TaskView,
)
from app.orchestrator.errors import OrchError
from app.orchestrator.events import CoreEvent, PoolChanged, TaskChanged, TaskEvent
from app.orchestrator.ports import GpuInventory
from app.orchestrator.service import Orchestrator
from app.ui.bridge import (
    MAX_UPDATES_PER_S,
    AppControls,
    BackendGone,
    BridgeSignals,
    CoreSample,
    OnEnd,
    OnEvents,
    StreamFeed,
)
from app.ui.models_client import EmbeddedModels, ModelsClient, reload_with

log = logging.getLogger("llama_orch.ui")

T = TypeVar("T")
TASK_CACHE = 1000
DECISION_CACHE = 1000


class BackendRunner(Protocol):
    """What the bridge needs of ``BackendThread``."""

    on_error: Callable[[str], None]
    on_crash: Callable[[str], None]

    @property
    def serving(self) -> bool:
        """Return True while the backend loop serves."""

    def call(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the backend loop; never blocks."""


@dataclass(slots=True)
class Batch:
    """What changed since the previous flush (built on the backend thread)."""

    tasks: dict[str, TaskView] = field(default_factory=dict)
    pools: dict[str, PoolView] = field(default_factory=dict)
    decisions: list[DecisionRecord] = field(default_factory=list)
    events: dict[str, list[TaskEvent]] = field(default_factory=dict)
    ended: dict[str, OrchError | None] = field(default_factory=dict)
    sample: CoreSample | None = None


class Outbox:
    """Backend-loop side: collects core events and stream events, flushes batches."""

    def __init__(self, deliver: Callable[[Batch], None], period_s: float) -> None:
        self._deliver = deliver
        self._period = period_s
        self._batch = Batch()
        self._armed = False
        self._last = 0.0

    def on_core_event(self, event: CoreEvent) -> None:
        """The core's observer: keep the latest view per task and pool."""
        if isinstance(event, TaskChanged):
            self._batch.tasks[event.view.task_id] = event.view
        elif isinstance(event, PoolChanged):
            self._batch.pools[event.view.pool_id] = event.view
        else:
            self._batch.decisions.append(event.record)
        self._arm()

    def add_sample(self, sample: CoreSample, live: list[TaskView]) -> None:
        """Add the periodic sample and the live tasks' views (their progress and the
        transitions the core does not announce, e.g. to streaming)."""
        self._batch.sample = sample
        for view in live:
            self._batch.tasks[view.task_id] = view
        self._arm()

    async def pump(self, orch: Orchestrator, task_id: str) -> None:
        """Read one task's stream into the batches until its terminal event."""
        error: OrchError | None = None
        try:
            async for event in orch.stream(task_id):
                events = self._batch.events.get(task_id)
                if events is None:
                    self._batch.events[task_id] = [event]
                    self._arm()
                else:
                    events.append(event)
        except OrchError as exc:
            error = exc
        self._batch.ended[task_id] = error
        self._arm()

    def _arm(self) -> None:
        if self._armed:
            return
        self._armed = True
        loop = asyncio.get_running_loop()
        delay = self._last + self._period - loop.time()
        if delay <= 0:
            loop.call_soon(self._flush)
        else:
            loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._armed = False
        self._last = asyncio.get_running_loop().time()
        batch, self._batch = self._batch, Batch()
        self._deliver(batch)


@dataclass(frozen=True, slots=True, eq=False)
class _Follower:
    """One followed stream's callbacks (Qt thread) and its pump on the backend loop."""

    on_events: OnEvents
    on_end: OnEnd
    pump: concurrent.futures.Future[None]


class _Relay(QObject):
    """Signals emitted on the backend thread, delivered queued on the Qt thread."""

    batch = Signal(object)
    error = Signal(str)
    crashed = Signal(str)


class _BackendControls:
    """``AppControls`` whose ``apply_settings`` runs on the backend loop."""

    def __init__(self, inner: AppControls, bridge: EmbeddedBridge) -> None:
        self._inner = inner
        self._bridge = bridge

    def api_url(self) -> str:
        return self._inner.api_url()

    def config_path(self) -> str:
        return self._inner.config_path()

    def log_path(self) -> str:
        return self._inner.log_path()

    def model_catalog(self) -> ModelCatalog | None:
        return getattr(self._inner, "model_catalog", lambda: None)()

    def current_settings(self) -> Any:
        return self._inner.current_settings()

    async def apply_settings(self, settings: Any) -> None:
        await self._bridge.call(self._inner.apply_settings(settings))


class EmbeddedBridge(BridgeSignals):
    """The ``Bridge`` of the desktop app: the backend runs on ``runner``'s thread."""

    def __init__(
        self,
        orch: Orchestrator,
        controls: AppControls,
        runner: BackendRunner,
        parent: QObject | None = None,
        sample_interval_s: float = 1.0,
    ) -> None:
        """Attach to the running backend. Blocks briefly (one round trip) to read
        the first snapshots. Raises BackendGone when the backend is not serving."""
        super().__init__(parent)
        self._orch = orch
        self._runner = runner
        self._controls = _BackendControls(controls, self)
        self._gone: str | None = None
        self._closed = False
        self._background: set[asyncio.Task[Any]] = set()
        self._followers: dict[str, _Follower] = {}
        self._relay = _Relay()
        queued = Qt.ConnectionType.QueuedConnection
        self._relay.batch.connect(self._on_batch, queued)
        self._relay.error.connect(self.report_error, queued)
        self._relay.crashed.connect(self._on_crash, queued)
        runner.on_error = self._relay.error.emit
        runner.on_crash = self._relay.crashed.emit
        self._outbox = Outbox(self._relay.batch.emit, 1.0 / MAX_UPDATES_PER_S)
        self._pools: dict[str, PoolView] = {}
        self._tasks: OrderedDict[str, TaskView] = OrderedDict()
        self._decisions: deque[DecisionRecord] = deque(maxlen=DECISION_CACHE)
        self._gpu = GpuInventory(gpus=(), at=0.0)
        self._detach: Callable[[], None] | None = None
        self._artifacts: ArtifactRegistry | None = getattr(
            controls, "artifact_registry", lambda: None
        )()
        catalog = getattr(controls, "model_catalog", lambda: None)()
        self._catalog: ModelCatalog | None = catalog
        self.models: ModelsClient | None = (
            EmbeddedModels(catalog, orch, self.call) if catalog is not None else None
        )
        if not runner.serving:
            raise BackendGone("the backend is not running")
        runner.call(self._attach(sample_interval_s)).result(timeout=30)

    @property
    def controls(self) -> AppControls:
        return self._controls

    # ---- backend side --------------------------------------------------------------

    async def _attach(self, interval_s: float) -> None:
        orch = self._orch
        self._pools = {p.pool_id: p for p in orch.pool_views()}
        for view in reversed(orch.tasks(TASK_CACHE)):
            self._tasks[view.task_id] = view
        self._decisions.extend(reversed(orch.recent_decisions(DECISION_CACHE)))
        self._gpu = orch.gpu_inventory()
        unsubscribe = orch.subscribe(self._outbox.on_core_event)
        sampler = asyncio.get_running_loop().create_task(self._sample_every(interval_s))

        def detach() -> None:
            unsubscribe()
            sampler.cancel()

        self._detach = detach

    async def _sample_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                orch = self._orch
                live = orch.tasks(orch.live_task_count())
                self._outbox.add_sample(CoreSample.take(orch), live)
            except Exception as exc:  # a sampling failure must not end sampling
                self._relay.error.emit(f"sampling failed: {exc}")

    # ---- Qt side: deliveries -----------------------------------------------------------

    @Slot(object)
    def _on_batch(self, batch: Batch) -> None:
        if self._closed:
            return
        for task_id, events in batch.events.items():
            if (follower := self._followers.get(task_id)) is not None:
                self._call(task_id, follower.on_events, events)
        for task_id, error in batch.ended.items():
            if (follower := self._followers.pop(task_id, None)) is not None:
                self._call(task_id, follower.on_end, error)
        self._apply_views(batch)
        if batch.sample is not None:
            self._gpu = batch.sample.gpu
            self.gpuChanged.emit(batch.sample.gpu)
            self.sampled.emit(batch.sample)

    def _call(self, task_id: str, fn: Callable[[Any], None], arg: Any) -> None:
        """Make one follower's call; a failing one ends its stream and is reported,
        and the other streams are still delivered."""
        try:
            fn(arg)
        except Exception as exc:
            log.exception("showing task %s failed", task_id)
            self.report_error(f"showing the answer failed: {exc}")
            follower = self._followers.pop(task_id, None)
            if follower is not None:
                follower.pump.cancel()
                with contextlib.suppress(Exception):
                    follower.on_end(None)

    def _apply_views(self, batch: Batch) -> None:
        if batch.tasks:
            for task_id, view in batch.tasks.items():
                self._tasks[task_id] = view
            while len(self._tasks) > TASK_CACHE:
                self._tasks.popitem(last=False)
            self.tasksChanged.emit(tuple(batch.tasks.values()))
        if batch.pools:
            self._pools.update(batch.pools)
            self.poolsChanged.emit(tuple(batch.pools.values()))
        if batch.decisions:
            self._decisions.extend(batch.decisions)
            self.decisionsMade.emit(tuple(batch.decisions))

    @Slot(str)
    def _on_crash(self, why: str) -> None:
        self._gone = f"the backend stopped unexpectedly ({why})"
        followers, self._followers = self._followers, {}
        for task_id, follower in followers.items():
            self._call(task_id, follower.on_end, BackendGone(self._gone))
        self.report_error(
            f"The backend stopped unexpectedly ({why}); its engines were stopped. "
            "Quit and start llama-orch again."
        )

    # ---- snapshots -----------------------------------------------------------------------

    def pools(self) -> list[PoolView]:
        return list(self._pools.values())

    def tasks(self, limit: int = 200) -> list[TaskView]:
        live = [t for t in reversed(self._tasks.values()) if not t.state.terminal]
        done = [t for t in reversed(self._tasks.values()) if t.state.terminal]
        return (live + done)[:limit]

    def decisions(self, limit: int = 100) -> list[DecisionRecord]:
        return list(reversed(self._decisions))[:limit]

    def decision_for(self, task_id: str) -> DecisionRecord | None:
        return next((d for d in reversed(self._decisions) if d.task_id == task_id), None)

    def gpu(self) -> GpuInventory:
        return self._gpu

    # ---- commands ------------------------------------------------------------------------

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the backend loop and await its result on the Qt loop.

        Raises what ``coro`` raises, or BackendGone when the backend stopped
        (never hangs on a dead backend)."""
        if self._gone is not None or not self._runner.serving:
            coro.close()
            raise BackendGone(self._gone or "the backend is not running")
        future = self._runner.call(coro)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancelled() and not self._runner.serving:
                raise BackendGone(self._gone or "the backend stopped") from None
            raise

    async def submit(self, req: TaskRequest) -> AdmissionResponse:
        return await self.call(_sync(self._orch.submit, req, identity="gui"))

    async def stream(self, task_id: str) -> AsyncIterator[Sequence[TaskEvent]]:
        feed = StreamFeed()
        stop = self.follow(task_id, feed.push, feed.end)
        try:
            async for events in feed.batches():  # the outbox already paces the batches
                yield events
        finally:
            stop()

    def follow(self, task_id: str, on_events: OnEvents, on_end: OnEnd) -> Callable[[], None]:
        """The outbox's one queued delivery calls ``on_events`` / ``on_end`` directly
        (no asyncio task per stream). On a stopped backend ``on_end(BackendGone)``
        comes from the Qt event loop, never from inside this call."""
        if self._gone is not None or not self._runner.serving:
            gone = BackendGone(self._gone or "the backend is not running")
            QTimer.singleShot(0, self, lambda: on_end(gone))
            return lambda: None
        pump = self._runner.call(self._outbox.pump(self._orch, task_id))
        follower = self._followers[task_id] = _Follower(on_events, on_end, pump)

        def stop() -> None:
            if self._followers.get(task_id) is follower:
                del self._followers[task_id]
            pump.cancel()

        return stop

    async def cancel(self, task_id: str) -> None:
        await self.call(_sync(self._orch.cancel, task_id))

    async def session(self, session_id: str) -> SessionInfo | None:
        try:
            return await self.call(_sync(self._orch.session, session_id))
        except BackendGone:
            raise
        except OrchError:
            return None

    async def drain(self, pool_id: str, deadline_ms: int = 30_000) -> None:
        await self.call(_sync(self._orch.drain, pool_id, deadline_ms))

    async def resume(self, pool_id: str) -> None:
        await self.call(_sync(self._orch.resume, pool_id))

    async def drain_all(self) -> None:
        await self.call(self._every_pool(lambda pid: self._orch.drain(pid, 3_600_000)))

    async def resume_all(self) -> None:
        await self.call(self._every_pool(self._orch.resume))

    async def _every_pool(self, act: Callable[[str], None]) -> None:
        for pid in self._orch.pool_ids():
            act(pid)

    async def reload(self, pool_id: str, model_ref: str) -> ReloadResult:
        """Reload ``pool_id``; with a catalog the ref is resolved there and the
        choice is written to the config (the GUI always persists)."""
        if self._catalog is None:
            return await self.call(self._orch.reload(pool_id, model_ref))
        return await self.call(reload_with(self._catalog, self._orch, pool_id, model_ref, True))

    async def restart(self, pool_id: str) -> None:
        await self.call(self._orch.restart(pool_id))

    async def pool_log(self, pool_id: str, tail_lines: int = 200) -> tuple[str | None, list[str]]:
        return await self.call(self._orch.pool_log(pool_id, tail_lines))

    async def artifact(self, artifact_id: str) -> StoredArtifact:
        if self._artifacts is None:
            raise OrchError("UNSUPPORTED", "this app keeps no task transcripts", status=400)
        return await self.call(self._artifacts.get(artifact_id))

    # ---- Qt-side helpers -----------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
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

    @Slot(str)
    def report_error(self, message: str) -> None:
        log.error(message)
        self.errorRaised.emit(message)

    def close(self) -> None:
        """Stop signals and sampling; the backend keeps running until it is stopped."""
        self._closed = True
        detach = self._detach
        if detach is not None and self._runner.serving:
            self._runner.call(_sync(detach))


async def _sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return fn(*args, **kwargs)
