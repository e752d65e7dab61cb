"""A recording fake that satisfies the app.ui.bridge.Bridge protocol, for widget tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from app.orchestrator.artifacts_port import StoredArtifact
from app.orchestrator.contracts import (
    AdmissionResponse,
    DecisionRecord,
    PoolView,
    QueueDepth,
    ReloadResult,
    SessionInfo,
    TaskRequest,
    TaskView,
)
from app.orchestrator.errors import OrchError
from app.orchestrator.events import TaskEvent
from app.orchestrator.ports import GpuInfo, GpuInventory
from app.ui.bridge import BridgeSignals, OnEnd, OnEvents, follow_stream


def pool_view(pool_id: str = "gpu0", **kw: Any) -> PoolView:
    """Return a PoolView with sensible defaults, overridden by ``kw``."""
    base: dict[str, Any] = dict(
        pool_id=pool_id,
        engine="llamacpp",
        engine_version="0.3.36",
        model="demo",
        ctx=2048,
        device_mask="0",
        demo=False,
        state="ready",
        detail="",
        live=True,
        ready=True,
        draining=False,
        slots_total=2,
        slots_busy=0,
        queue=QueueDepth(interactive=0, batch=0),
        vram_total_bytes=24 << 30,
        vram_free_bytes=20 << 30,
        gpu_utilization=10.0,
        perf_tokens_per_s=120.0,
        first_token_ms=35.0,
        crashes_recent=0,
    )
    base.update(kw)
    return PoolView(**base)


def gpu(index: int = 0, name: str = "NVIDIA GeForce RTX 3090", total_gib: int = 24) -> GpuInfo:
    """Return a GpuInfo with plausible readings."""
    return GpuInfo(
        index=index,
        uuid=f"GPU-{index}",
        name=name,
        vram_total_bytes=total_gib << 30,
        vram_free_bytes=(total_gib - 4) << 30,
        vram_used_bytes=4 << 30,
        utilization_pct=37.0,
        compute_capability="8.6",
        temperature_c=54.0,
        power_w=180.0,
    )


class FakeControls:
    """Records apply_settings calls; refuses when ``refuse`` is set."""

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings
        self.applied: list[Any] = []
        self.refuse: str | None = None

    def api_url(self) -> str:
        return "http://127.0.0.1:8080"

    def config_path(self) -> str:
        return "/tmp/llama-orch-test/config.toml"

    def log_path(self) -> str:
        return "/tmp/llama-orch-test/llama-orch.log"

    def current_settings(self) -> Any:
        return self.settings

    def model_catalog(self) -> Any:
        return None

    async def apply_settings(self, settings: Any) -> None:
        if self.refuse:
            raise ValueError(self.refuse)
        self.applied.append(settings)
        self.settings = settings


class FakeBridge(BridgeSignals):
    """A ``Bridge``; records every command.

    ``script[task_id]`` (or ``default_script``) lists the TaskEvents that
    ``stream`` yields, one per batch; ``delay`` paces them.
    """

    def __init__(self, controls: FakeControls | None = None) -> None:
        super().__init__()
        self._controls = controls or FakeControls()
        self.models: Any = None
        self.commands: list[tuple[str, Any]] = []
        self.pool_logs: dict[str, list[str]] = {}
        self.artifacts: dict[str, StoredArtifact] = {}
        self.submitted: list[TaskRequest] = []
        self.pool_list: list[PoolView] = [pool_view("gpu0")]
        self.task_list: list[TaskView] = []
        self.decision_list: list[DecisionRecord] = []
        self.inventory = GpuInventory(gpus=(gpu(0),), at=0.0)
        self.script: dict[str, list[TaskEvent]] = {}
        self.default_script: list[TaskEvent] = []
        self.delay = 0.0
        self.submit_error: Exception | None = None
        self.background: set[asyncio.Task[Any]] = set()
        self.errors: list[str] = []
        self.errorRaised.connect(self.errors.append)

    @property
    def controls(self) -> FakeControls:
        return self._controls

    def pools(self) -> list[PoolView]:
        return list(self.pool_list)

    def tasks(self, limit: int = 200) -> list[TaskView]:
        return self.task_list[:limit]

    def decisions(self, limit: int = 100) -> list[DecisionRecord]:
        return self.decision_list[:limit]

    def decision_for(self, task_id: str) -> DecisionRecord | None:
        return next((d for d in reversed(self.decision_list) if d.task_id == task_id), None)

    def gpu(self) -> GpuInventory:
        return self.inventory

    async def session(self, session_id: str) -> SessionInfo | None:
        return None

    def submit(self, req: TaskRequest) -> Coroutine[Any, Any, AdmissionResponse]:
        self.commands.append(("submit", req))
        self.submitted.append(req)
        return self._admit(req)

    async def _admit(self, req: TaskRequest) -> AdmissionResponse:
        if self.submit_error is not None:
            raise self.submit_error
        return AdmissionResponse(
            task_id=req.task_id,
            queue_position=0,
            predicted_start_ms=0,
            pool_id="gpu0",
            session_id=req.session_id,
        )

    async def stream(self, task_id: str) -> AsyncIterator[Sequence[TaskEvent]]:
        for event in self.script.get(task_id, self.default_script):
            if self.delay:
                await asyncio.sleep(self.delay)
            else:
                await asyncio.sleep(0)
            yield [event]

    def follow(self, task_id: str, on_events: OnEvents, on_end: OnEnd) -> Callable[[], None]:
        return follow_stream(self, task_id, on_events, on_end)

    # Commands record when called (as the widget calls them), and run when awaited.

    def cancel(self, task_id: str) -> Coroutine[Any, Any, None]:
        self.commands.append(("cancel", task_id))
        return _done()

    def drain(self, pool_id: str, deadline_ms: int = 30_000) -> Coroutine[Any, Any, None]:
        self.commands.append(("drain", pool_id))
        return _done()

    def resume(self, pool_id: str) -> Coroutine[Any, Any, None]:
        self.commands.append(("resume", pool_id))
        return _done()

    def drain_all(self) -> Coroutine[Any, Any, None]:
        self.commands.append(("drain_all", None))
        return _done()

    def resume_all(self) -> Coroutine[Any, Any, None]:
        self.commands.append(("resume_all", None))
        return _done()

    async def reload(self, pool_id: str, model_ref: str) -> ReloadResult:
        self.commands.append(("reload", (pool_id, model_ref)))
        return ReloadResult(pool_id=pool_id, ok=True, model=model_ref, message="ok")

    async def restart(self, pool_id: str) -> None:
        self.commands.append(("restart", pool_id))

    async def artifact(self, artifact_id: str) -> StoredArtifact:
        self.commands.append(("artifact", artifact_id))
        if artifact_id not in self.artifacts:
            raise OrchError("NOT_FOUND", f"no artifact {artifact_id}", status=404)
        return self.artifacts[artifact_id]

    async def pool_log(self, pool_id: str, tail_lines: int = 200) -> tuple[str | None, list[str]]:
        self.commands.append(("pool_log", (pool_id, tail_lines)))
        lines = self.pool_logs.get(pool_id, [])
        return f"/logs/{pool_id}.log", lines[-tail_lines:]

    def run(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(lambda t: self._done(t, what))
        return task

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self.background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.report_error(f"{what} failed: {exc}")

    def report_error(self, message: str) -> None:
        self.errorRaised.emit(message)

    def close(self) -> None:
        self.commands.append(("close", None))


async def _done() -> None:
    return None


def new_task_id() -> str:
    return str(uuid.uuid4())
