"""``HttpBridge``: the window's ``Bridge`` over a running server's public HTTP API.

``llama-orch gui --connect URL`` runs the whole window against ``serve`` (local
or on the LAN) instead of embedding a backend. Everything runs on the Qt
thread's qasync loop: one poller task reads pools, tasks, decisions and
``/metrics`` once a second and emits only what changed (so each signal fires
at most once a second); task streams are the server's SSE streams, handed to
the widgets in batches at most ``MAX_UPDATES_PER_S`` times a second. When the
server goes away the bridge says so, keeps its last snapshots, retries, and
says so again when it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families
from PySide6.QtCore import QObject, Signal

from app.client.http import ServerClient, Unauthorized, Unreachable
from app.config import Settings, parse_settings
from app.orchestrator.artifacts_port import StoredArtifact
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
from app.orchestrator.events import TaskEvent
from app.orchestrator.ports import GpuInfo, GpuInventory
from app.ui.bridge import (
    MAX_UPDATES_PER_S,
    AppControls,
    BridgeSignals,
    CoreSample,
    OnEnd,
    OnEvents,
    StreamFeed,
    follow_stream,
)

if TYPE_CHECKING:
    from app.ui.models_client import ModelsClient

log = logging.getLogger("llama_orch.client")

COUNTERS = {
    "tasks_enqueued_total": "enqueued",
    "tasks_started_total": "started",
    "tasks_canceled_total": "canceled",
    "tasks_rejected_total": "rejected",
}
RELOAD_TIMEOUT_S = 600.0  # a reload drains the pool and loads a model


class RemoteControls:
    """``AppControls`` of a connected window: the server's files are on its machine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._settings = parse_settings({}, env={})

    def api_url(self) -> str:
        return self.url

    def config_path(self) -> str:
        return ""

    def log_path(self) -> str:
        return ""

    def current_settings(self) -> Settings:
        return self._settings

    def model_catalog(self) -> None:
        """Return None: the catalog of a connected server is not reachable from here."""
        return None

    async def apply_settings(self, settings: Any) -> None:
        """Refuse: a connected window cannot change the server's settings."""
        raise ValueError(
            f"this window watches the server at {self.url}; change its settings in the "
            "config file on that machine and restart it"
        )


def parse_metrics(text: str) -> tuple[dict[str, int], tuple[GpuInfo, ...]]:
    """Return the task counters and the per-GPU readings in a /metrics body. Pure."""
    counters: dict[str, int] = dict.fromkeys(COUNTERS.values(), 0)
    util: dict[int, float] = {}
    used: dict[int, int] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in COUNTERS:
                counters[COUNTERS[s.name]] += int(s.value)
            elif s.name == "gpu_utilization" and s.labels.get("device", "").isdigit():
                util[int(s.labels["device"])] = float(s.value)
            elif s.name == "vram_used_bytes" and s.labels.get("device", "").isdigit():
                used[int(s.labels["device"])] = int(s.value)
    gpus = tuple(
        GpuInfo(i, None, f"GPU {i}", None, None, used.get(i), util.get(i), None, None, None)
        for i in sorted(util.keys() | used.keys())
    )
    return counters, gpus


class HttpBridge(BridgeSignals):
    """The ``Bridge`` of ``gui --connect``. Emits ``statusChanged`` (a sentence) when
    the connection is lost or back."""

    statusChanged = Signal(str)

    def __init__(
        self, client: ServerClient, parent: QObject | None = None, poll_s: float = 1.0
    ) -> None:
        super().__init__(parent)
        self.client = client
        self._controls = RemoteControls(client.url)
        self._poll_s = poll_s
        self._pools: dict[str, PoolView] = {}
        self._tasks: dict[str, TaskView] = {}
        self._decisions: list[DecisionRecord] = []
        self._gpu = GpuInventory(gpus=(), at=0.0, hint=f"GPUs of the server at {client.url}")
        self._background: set[asyncio.Task[Any]] = set()
        self._poller: asyncio.Task[None] | None = None
        self.connected = False
        self.closed = False
        self.models: ModelsClient | None = None

    @property
    def controls(self) -> AppControls:
        return self._controls

    # ---- connection ---------------------------------------------------------------------

    async def start(self) -> None:
        """Read the first snapshots and start polling. Raises OrchError (Unreachable,
        Unauthorized) when the server cannot be watched."""
        await self.poll_once()
        self.connected = True
        self._poller = asyncio.ensure_future(self._poll_forever())

    async def _poll_forever(self) -> None:
        while not self.closed:
            await asyncio.sleep(self._poll_s)
            try:
                await self.poll_once()
            except OrchError as exc:
                self._lost(exc)
                continue
            if not self.connected:
                self.connected = True
                self._say(f"Reconnected to the llama-orch server at {self.client.url}.")

    def _lost(self, exc: OrchError) -> None:
        if not self.connected:
            return
        self.connected = False
        if isinstance(exc, Unauthorized | Unreachable):
            self.report_error(f"{exc.message} Reconnecting…")
        else:
            self.report_error(f"Lost the server at {self.client.url}: {exc}. Reconnecting…")

    def _say(self, sentence: str) -> None:
        log.info(sentence)
        self.statusChanged.emit(sentence)

    async def poll_once(self) -> None:
        """Read pools, tasks, decisions and metrics once; emit what changed. Raises OrchError."""
        c = self.client
        pools = [PoolView.model_validate(p) for p in await c.get("/v1/pools")]
        tasks = [TaskView.model_validate(t) for t in await c.get("/v1/tasks?limit=200")]
        raw = await c.get("/v1/placement/decisions?limit=100")
        decisions = [DecisionRecord.model_validate(d) for d in raw]
        counters, gpus = parse_metrics(await c.get_text("/metrics"))
        self._apply(pools, tasks, decisions)
        at = asyncio.get_running_loop().time()
        self._gpu = GpuInventory(gpus=gpus, at=at, hint=None if gpus else self._gpu.hint)
        self.gpuChanged.emit(self._gpu)
        self.sampled.emit(self._sample(at, counters))

    def _apply(
        self, pools: list[PoolView], tasks: list[TaskView], decisions: list[DecisionRecord]
    ) -> None:
        changed_pools = tuple(p for p in pools if self._pools.get(p.pool_id) != p)
        self._pools = {p.pool_id: p for p in pools}
        if changed_pools:
            self.poolsChanged.emit(changed_pools)
        changed = tuple(t for t in tasks if self._tasks.get(t.task_id) != t)
        self._tasks = {t.task_id: t for t in tasks}
        if changed:
            self.tasksChanged.emit(changed)
        known = {(d.task_id, d.at) for d in self._decisions} if self._decisions else set()
        new = tuple(d for d in reversed(decisions) if (d.task_id, d.at) not in known)
        self._decisions = decisions
        if new:
            self.decisionsMade.emit(new)

    def _sample(self, at: float, counters: dict[str, int]) -> CoreSample:
        tokens: dict[str, int] = dict.fromkeys(self._pools, 0)
        for t in self._tasks.values():
            if t.pool_id in tokens:
                tokens[t.pool_id] += t.tokens_out
        ttfts = [t.ttft_ms for t in self._tasks.values() if t.ttft_ms is not None]
        return CoreSample(
            at=at, pools=self.pools(), gpu=self._gpu, counters=counters,
            tokens_out=tokens, ttfts=ttfts,
        )  # fmt: skip

    # ---- snapshots -----------------------------------------------------------------------

    def pools(self) -> list[PoolView]:
        return list(self._pools.values())

    def tasks(self, limit: int = 200) -> list[TaskView]:
        return list(self._tasks.values())[:limit]

    def decisions(self, limit: int = 100) -> list[DecisionRecord]:
        return self._decisions[:limit]

    def decision_for(self, task_id: str) -> DecisionRecord | None:
        return next((d for d in self._decisions if d.task_id == task_id), None)

    def gpu(self) -> GpuInventory:
        return self._gpu

    # ---- commands ------------------------------------------------------------------------

    async def submit(self, req: TaskRequest) -> AdmissionResponse:
        body = req.model_dump(mode="json", exclude_none=True)
        return AdmissionResponse.model_validate(
            await self.client.request("POST", "/v1/tasks", body)
        )

    async def stream(self, task_id: str) -> AsyncIterator[Sequence[TaskEvent]]:
        feed = StreamFeed()
        reader = asyncio.ensure_future(self._read(task_id, feed))
        try:
            async for events in feed.batches(1.0 / MAX_UPDATES_PER_S):
                yield events
        finally:
            reader.cancel()

    def follow(self, task_id: str, on_events: OnEvents, on_end: OnEnd) -> Callable[[], None]:
        return follow_stream(self, task_id, on_events, on_end)

    async def _read(self, task_id: str, feed: StreamFeed) -> None:
        try:
            async for event in self.client.events(task_id):
                feed.push((event,))
        except OrchError as exc:
            feed.end(exc)
            return
        feed.end()

    async def cancel(self, task_id: str) -> None:
        await self.client.request("POST", f"/v1/tasks/{task_id}/cancel")

    async def session(self, session_id: str) -> SessionInfo | None:
        try:
            return SessionInfo.model_validate(await self.client.get(f"/v1/sessions/{session_id}"))
        except (Unreachable, Unauthorized):
            raise
        except OrchError:
            return None

    async def drain(self, pool_id: str, deadline_ms: int = 30_000) -> None:
        body = {"deadline_ms": deadline_ms}
        await self.client.request("POST", f"/v1/pools/{pool_id}/drain", body)
        await self._refresh()

    async def resume(self, pool_id: str) -> None:
        await self.client.request("POST", f"/v1/pools/{pool_id}/resume")
        await self._refresh()

    async def drain_all(self) -> None:
        for pool_id in list(self._pools):
            await self.drain(pool_id, 3_600_000)

    async def resume_all(self) -> None:
        for pool_id in list(self._pools):
            await self.resume(pool_id)

    async def reload(self, pool_id: str, model_ref: str) -> ReloadResult:
        body = {"model_ref": model_ref}
        path = f"/v1/pools/{pool_id}/reload"
        answer = await self.client.request("POST", path, body, timeout_s=RELOAD_TIMEOUT_S)
        await self._refresh()
        return ReloadResult.model_validate(answer)

    async def restart(self, pool_id: str) -> None:
        raise OrchError(
            "UNSUPPORTED",
            f"restarting an engine is not part of the HTTP API; restart it on {self.client.url}",
            status=400,
        )

    async def pool_log(self, pool_id: str, tail_lines: int = 200) -> tuple[str | None, list[str]]:
        raise OrchError(
            "UNSUPPORTED",
            f"the engine log of pool {pool_id} is on the server's machine ({self.client.url}); "
            "read it there",
            status=400,
        )

    async def artifact(self, artifact_id: str) -> StoredArtifact:
        answer = await self.client.request("GET", f"/v1/artifacts/{artifact_id}")
        return StoredArtifact.model_validate(answer)

    async def _refresh(self) -> None:
        try:
            await self.poll_once()
        except OrchError as exc:
            self._lost(exc)

    # ---- Qt-side helpers -----------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(lambda t: self._done(t, what))
        return task

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.report_error(f"{what} failed: {exc}")

    def report_error(self, message: str) -> None:
        log.error(message)
        self.errorRaised.emit(message)

    def close(self) -> None:
        """Stop polling; the HTTP session is closed by ``aclose``. Never blocks."""
        self.closed = True
        if self._poller is not None:
            self._poller.cancel()

    async def aclose(self) -> None:
        """Stop polling and close the HTTP session."""
        self.close()
        await self.client.close()
