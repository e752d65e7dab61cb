"""Housekeeping: expired sessions are swept, GPU gauges follow NVML, no metric name is dead."""

from __future__ import annotations

import asyncio

import pytest

from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.contracts import PlacementMode, PlacementOverrides, TaskRequest
from app.orchestrator.errors import QueueFull
from app.orchestrator.housekeeping import gpu_gauge_values
from app.orchestrator.ports import GpuInfo, GpuInventory
from app.orchestrator.service import Orchestrator, OrchestratorConfig

GIB = 1 << 30


def gpu(index: int, util: float | None, used: int | None, free: int | None = None) -> GpuInfo:
    return GpuInfo(index, None, None, 8 * GIB, free, used, util, None, None, None)


class ManualClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now


class FixedProbe:
    """An NVML boundary fake: returns whatever inventory the test sets."""

    def __init__(self, *gpus: GpuInfo) -> None:
        self.inventory = GpuInventory(gpus=gpus, at=0.0)

    def snapshot(self) -> GpuInventory:
        return self.inventory


GAUGE_CASES = [
    ("both read", gpu(0, 37.0, 4 * GIB), ("0", 37.0, 4 * GIB)),
    ("used from total - free", gpu(1, None, None, free=6 * GIB), ("1", None, 2 * GIB)),
    ("nothing read", gpu(2, None, None), ("2", None, None)),
]


@pytest.mark.parametrize(
    ("info", "row"), [case[1:] for case in GAUGE_CASES], ids=[c[0] for c in GAUGE_CASES]
)
def test_gpu_gauge_values(info: GpuInfo, row: tuple[str, float | None, int | None]) -> None:
    assert gpu_gauge_values(GpuInventory(gpus=(info,), at=0.0)) == [row]


async def _orch(clock: ManualClock, probe: FixedProbe, **cfg: object) -> Orchestrator:
    config = OrchestratorConfig(housekeeping_interval_s=0.02, **cfg)  # type: ignore[arg-type]
    orch = Orchestrator(
        [MockEngine(MockSpec("a", tokens_per_s=0))], config, clock=clock, gpu_probe=probe
    )
    await orch.start()
    await asyncio.sleep(0.01)
    return orch


async def test_expired_sessions_are_swept_without_anyone_asking() -> None:
    clock = ManualClock()
    orch = await _orch(clock, FixedProbe(), session_ttl_s=60.0)
    for session in ("s1", "s2"):
        task = orch.submit(TaskRequest(prompt="x", max_tokens=2, session_id=session))
        async for _ in orch.stream(str(task.task_id)):
            pass
    await asyncio.sleep(0.05)
    assert orch.session_count() == 2
    clock.now += 61.0
    await asyncio.sleep(0.1)
    assert orch.session_count() == 0
    await orch.shutdown()


async def test_gpu_gauges_follow_the_snapshot() -> None:
    probe = FixedProbe(gpu(0, 37.0, 4 * GIB), gpu(1, 80.0, 6 * GIB))
    orch = await _orch(ManualClock(), probe)

    def value(name: str, device: str) -> float | None:
        # a device no pool uses carries empty pool identity labels
        labels = dict.fromkeys(("engine", "engine_version", "pool_id", "replica_id"), "")
        return orch.metrics.registry.get_sample_value(name, labels | {"device": device})

    assert value("gpu_utilization", "0") == 37.0
    assert value("vram_used_bytes", "1") == 6 * GIB
    probe.inventory = GpuInventory(gpus=(gpu(0, 55.0, 5 * GIB),), at=1.0)
    await asyncio.sleep(0.1)
    assert value("gpu_utilization", "0") == 55.0
    assert value("vram_used_bytes", "0") == 5 * GIB
    assert value("gpu_utilization", "1") is None  # the GPU went away
    await orch.shutdown()


async def test_every_metric_name_gets_a_sample() -> None:
    """A short life of the core (a task done, a 429, a crash and restart, a GPU tick)
    gives every declared metric at least one sample: no dead metric names."""
    engines = [
        MockEngine(MockSpec("a", tokens_per_s=0)),
        MockEngine(MockSpec("c", tokens_per_s=0, crash_after_tokens=1, restart_delay_ms=10)),
    ]
    config = OrchestratorConfig(housekeeping_interval_s=0.02, queue_capacity=1)
    probe = FixedProbe(gpu(0, 37.0, 4 * GIB))
    orch = Orchestrator(engines, config, clock=ManualClock(), gpu_probe=probe)
    await orch.start()
    await asyncio.sleep(0.01)
    pin_c = PlacementOverrides(mode=PlacementMode.PIN, pin_pool_id="c")
    for req in (
        TaskRequest(prompt="x", max_tokens=3, placement=PIN_A),
        TaskRequest(prompt="x", max_tokens=3, placement=pin_c),
    ):
        task = orch.submit(req)
        async for _ in orch.stream(str(task.task_id)):
            pass
    await asyncio.sleep(0.2)  # c crashed and restarts
    orch.submit(TaskRequest(prompt="x", max_tokens=50, placement=PIN_A))  # takes the slot
    queued = orch.submit(TaskRequest(prompt="x", max_tokens=50, placement=PIN_A))
    with pytest.raises(QueueFull):
        orch.submit(TaskRequest(prompt="x", max_tokens=50, placement=PIN_A))
    orch.cancel(str(queued.task_id))
    families = list(orch.metrics.registry.collect())
    dead = [f.name for f in families if not f.samples and f.name not in CATALOG_METRICS]
    assert len(families) > 10 and dead == []
    await orch.shutdown(deadline_s=0.1)


CATALOG_METRICS = {"catalog_verifications", "model_state"}  # the model store emits these
PIN_A = PlacementOverrides(mode=PlacementMode.PIN, pin_pool_id="a")
