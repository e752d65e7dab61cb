"""GpuPoller: snapshots, subscriber dispatch, process refresh rate, thread lifetime."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import pytest

from app.engine_host.gpu_poller import NOT_READ_YET_HINT, GpuPoller
from app.engine_host.nvml import MemoryInfo, NvmlInventory, NvmlUnavailableError
from app.orchestrator.ports import GpuInventory, GpuProbe
from tests.engine_host.fake_nvml import GIB, FakeClock, FakeNvml, rtx3090, rtx4060ti


class Deferred:
    """A dispatch that queues callbacks until ``run_all`` (like a loop that has not run yet)."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def __call__(self, callback: Callable[[], None]) -> None:
        self.pending.append(callback)

    def run_all(self) -> None:
        pending, self.pending = self.pending, []
        for callback in pending:
            callback()


class BlockingNvml(FakeNvml):
    """Blocks every memory read until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__(gpus=[rtx3090()])
        self.entered = threading.Event()
        self.release = threading.Event()

    def memory(self, handle: object) -> MemoryInfo:
        self.entered.set()
        self.release.wait(5.0)
        return super().memory(handle)


def make_poller(
    backend: FakeNvml,
    clock: FakeClock,
    pids: Callable[[], list[int]] = lambda: [],
    *,
    dispatch: Callable[[Callable[[], None]], None] = lambda callback: callback(),
    interval_s: float = 1.0,
    process_interval_s: float = 5.0,
) -> GpuPoller:
    reader = NvmlInventory(backend, clock=clock, engine_pids=pids)
    return GpuPoller(
        reader,
        clock=clock,
        dispatch=dispatch,
        interval_s=interval_s,
        process_interval_s=process_interval_s,
    )


def test_is_a_gpu_probe_with_an_empty_snapshot_before_the_first_poll() -> None:
    poller: GpuProbe = make_poller(FakeNvml(gpus=[rtx3090()]), FakeClock())

    snap = poller.snapshot()

    assert snap.gpus == ()
    assert snap.hint == NOT_READ_YET_HINT


def test_poll_once_stores_snapshot_and_dispatches_to_subscribers() -> None:
    dispatch = Deferred()
    poller = make_poller(FakeNvml(gpus=[rtx3090(), rtx4060ti()]), FakeClock(), dispatch=dispatch)
    seen: list[GpuInventory] = []
    poller.subscribe(seen.append)

    inv = poller.poll_once()

    assert poller.snapshot() is inv
    assert [g.name for g in inv.gpus] == ["NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 4060 Ti"]
    assert seen == []  # delivered only when the dispatcher runs the callback
    dispatch.run_all()
    assert seen == [inv]


def test_unsubscribe_stops_delivery() -> None:
    poller = make_poller(FakeNvml(gpus=[rtx3090()]), FakeClock())
    first: list[GpuInventory] = []
    second: list[GpuInventory] = []
    unsubscribe = poller.subscribe(first.append)
    poller.subscribe(second.append)

    poller.poll_once()
    unsubscribe()
    poller.poll_once()

    assert (len(first), len(second)) == (1, 2)


def test_processes_refresh_at_most_every_five_seconds_and_persist_between() -> None:
    clock = FakeClock()
    backend = FakeNvml(gpus=[rtx3090(processes=[(42, 3 * GIB)])])
    poller = make_poller(backend, clock, pids=lambda: [42])

    readings = []
    for t in (0.0, 1.0, 2.0, 4.9, 5.0, 6.0):
        clock.now = 1000.0 + t
        readings.append(poller.poll_once())

    assert backend.calls.count("processes") == 2  # at t=0 and t=5
    assert all(r.gpus[0].process_vram_bytes == ((42, 3 * GIB),) for r in readings)
    assert [r.at for r in readings] == [1_700_001_000.0 + t for t in (0, 1, 2, 4.9, 5, 6)]


def test_process_interval_is_never_shorter_than_the_poll_interval() -> None:
    clock = FakeClock()
    backend = FakeNvml(gpus=[rtx3090(processes=[(42, GIB)])])
    poller = make_poller(backend, clock, pids=lambda: [42], interval_s=3.0, process_interval_s=1.0)

    for t in (0.0, 2.0, 3.0):
        clock.now = 1000.0 + t
        poller.poll_once()

    assert backend.calls.count("processes") == 2


def test_empty_inventory_hint_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    error = NvmlUnavailableError("Driver Not Loaded", driver_missing=True)
    poller = make_poller(FakeNvml(init_error=error), FakeClock())

    with caplog.at_level(logging.WARNING, logger="llama_orch.nvml"):
        for _ in range(3):
            poller.poll_once()

    messages = [r.getMessage() for r in caplog.records if r.name == "llama_orch.nvml"]
    assert len(messages) == 1
    assert messages[0].startswith("No NVIDIA driver found (NVML: Driver Not Loaded)")


def test_failing_dispatch_or_subscriber_does_not_stop_polling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def closed_loop(callback: Callable[[], None]) -> None:
        raise RuntimeError("Event loop is closed")

    def broken(inv: GpuInventory) -> None:
        raise ValueError("observer bug")

    poller = make_poller(FakeNvml(gpus=[rtx3090()]), FakeClock(), dispatch=closed_loop)
    poller.subscribe(broken)
    assert len(poller.poll_once().gpus) == 1

    direct = make_poller(FakeNvml(gpus=[rtx3090()]), FakeClock())
    direct.subscribe(broken)
    with caplog.at_level(logging.ERROR, logger="llama_orch.nvml"):
        assert len(direct.poll_once().gpus) == 1
    assert "subscriber failed" in caplog.text


@pytest.mark.parametrize(("interval", "process_interval"), [(0.0, 5.0), (1.0, -1.0)])
def test_rejects_non_positive_intervals(interval: float, process_interval: float) -> None:
    with pytest.raises(ValueError, match="positive seconds"):
        GpuPoller(
            NvmlInventory(FakeNvml()), interval_s=interval, process_interval_s=process_interval
        )


def test_thread_polls_at_the_interval_and_stops_cleanly() -> None:
    backend = FakeNvml(gpus=[rtx3090()])
    polls: list[GpuInventory] = []
    three = threading.Event()

    def record(inv: GpuInventory) -> None:
        polls.append(inv)
        if len(polls) >= 3:
            three.set()

    poller = GpuPoller(NvmlInventory(backend), interval_s=0.05)
    poller.subscribe(record)
    poller.start()
    poller.start()  # a second start is a no-op
    assert poller.wait_first(5.0)
    assert three.wait(5.0)
    assert poller.stop()
    stopped_at = len(polls)
    time.sleep(0.12)

    assert len(polls) == stopped_at
    assert backend.calls.count("init") == 1
    assert backend.calls[-1] == "shutdown"


def test_thread_does_not_poll_faster_than_the_interval() -> None:
    backend = FakeNvml(gpus=[rtx3090()])
    poller = GpuPoller(NvmlInventory(backend), interval_s=0.2)
    poller.start()
    assert poller.wait_first(5.0)
    time.sleep(0.3)
    assert poller.stop()

    assert 1 <= backend.calls.count("name") <= 3


def test_snapshot_never_blocks_while_nvml_is_busy() -> None:
    backend = BlockingNvml()
    poller = GpuPoller(NvmlInventory(backend), interval_s=0.05, join_timeout_s=0.05)
    poller.start()
    assert backend.entered.wait(5.0)

    assert poller.snapshot().hint == NOT_READ_YET_HINT
    assert not poller.wait_first(0.01)
    assert poller.stop() is False  # bounded wait: the read is still blocked

    backend.release.set()
    assert poller.wait_first(5.0)
    assert len(poller.snapshot().gpus) == 1


def test_stop_without_start_returns_true() -> None:
    assert GpuPoller(NvmlInventory(FakeNvml())).stop()


async def test_subscribers_run_on_the_event_loop_thread() -> None:
    loop = asyncio.get_running_loop()
    delivered: asyncio.Future[tuple[int, GpuInventory]] = loop.create_future()

    def on_snapshot(inv: GpuInventory) -> None:
        if not delivered.done():
            delivered.set_result((threading.get_ident(), inv))

    poller = GpuPoller(
        NvmlInventory(FakeNvml(gpus=[rtx4060ti()])),
        dispatch=loop.call_soon_threadsafe,
        interval_s=0.05,
    )
    poller.subscribe(on_snapshot)
    poller.start()
    try:
        thread_id, inv = await asyncio.wait_for(delivered, 5.0)
    finally:
        await asyncio.to_thread(poller.stop)

    assert thread_id == threading.get_ident()
    assert inv.gpus[0].compute_capability == "8.9"
