"""MetricsView: derived series from scripted 1 Hz CoreSamples."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from app.orchestrator.contracts import QueueDepth
from app.orchestrator.ports import GpuInventory
from app.ui.bridge import CoreSample
from app.ui.metrics_view import MetricsView, Ring, percentile
from tests.ui.fakes import FakeBridge, gpu, pool_view


def sample(
    at: float,
    tokens: dict[str, int],
    *,
    counters: dict[str, int] | None = None,
    ttfts: list[int] | None = None,
    queues: tuple[tuple[int, int], ...] = ((0, 0),),
    util: float | None = 37.0,
) -> CoreSample:
    pools = [
        pool_view(f"gpu{i}", queue=QueueDepth(interactive=qi, batch=qb))
        for i, (qi, qb) in enumerate(queues)
    ]
    inventory = GpuInventory(gpus=(replace(gpu(0), utilization_pct=util),), at=at)
    base = {"started": 0, "rejected": 0, "canceled": 0, "enqueued": 0}
    return CoreSample(
        at=at,
        pools=pools,
        gpu=inventory,
        counters={**base, **(counters or {})},
        tokens_out=tokens,
        ttfts=ttfts or [],
    )


@pytest.fixture
def view(qtbot: Any) -> MetricsView:
    widget = MetricsView(FakeBridge())
    qtbot.addWidget(widget)
    return widget


def test_tokens_per_second_are_deltas_over_time(view: MetricsView) -> None:
    bridge = view.bridge
    bridge.sampled.emit(sample(100.0, {"gpu0": 0, "gpu1": 50}))
    bridge.sampled.emit(sample(101.0, {"gpu0": 30, "gpu1": 50}))
    bridge.sampled.emit(sample(103.0, {"gpu0": 130, "gpu1": 70}))
    series = view.history.tokens_per_s
    assert series["gpu0"].values() == [30.0, 50.0]
    assert series["gpu1"].values() == [0.0, 10.0]
    xs, _ = series["gpu0"].arrays()
    assert list(xs) == [101.0, 103.0]


def test_queue_depth_sums_pools_per_priority(view: MetricsView) -> None:
    view.add_sample(sample(1.0, {}, queues=((2, 1), (3, 0))))
    assert view.history.queue["interactive"].values() == [5.0]
    assert view.history.queue["batch"].values() == [1.0]


def test_gpu_utilization_and_vram(view: MetricsView) -> None:
    view.add_sample(sample(1.0, {}, util=55.0))
    view.add_sample(sample(2.0, {}, util=None))
    util = view.history.gpu_util[0].values()
    assert util[0] == 55.0
    assert math.isnan(util[1])
    assert view.history.vram_used_gib[0].values() == [4.0, 4.0]


def test_ttft_percentiles(view: MetricsView) -> None:
    view.add_sample(sample(1.0, {}, ttfts=list(range(1, 101))))
    view.add_sample(sample(2.0, {}, ttfts=[]))
    p50 = view.history.ttft["p50"].values()
    p95 = view.history.ttft["p95"].values()
    assert (p50[0], p95[0]) == (50.0, 95.0)
    assert math.isnan(p50[1]) and math.isnan(p95[1])


def test_tasks_per_minute_count_the_last_sixty_seconds(view: MetricsView) -> None:
    for t in range(0, 91):
        view.add_sample(sample(float(t), {}, counters={"started": 2 * t, "rejected": t // 30}))
    started = view.history.per_minute["started"].values()
    rejected = view.history.per_minute["rejected"].values()
    assert started[0] == 0.0
    assert started[30] == 60.0
    assert started[60] == 120.0
    assert started[90] == 120.0  # still a one-minute window
    assert rejected[90] == 2.0
    assert view.history.per_minute["canceled"].values()[-1] == 0.0


def test_old_or_repeated_samples_are_ignored(view: MetricsView) -> None:
    view.add_sample(sample(5.0, {"gpu0": 10}))
    view.add_sample(sample(5.0, {"gpu0": 99}))
    view.add_sample(sample(6.0, {"gpu0": 20}))
    assert view.history.tokens_per_s["gpu0"].values() == [10.0]


def test_window_limits_the_drawn_points(view: MetricsView) -> None:
    view.set_window_minutes(5)
    for t in range(0, 400):
        view.history.ingest(sample(float(t), {"gpu0": 10 * t}))
    view.redraw()
    xs, ys = view.charts["tokens"].curves["gpu0"].getData()
    assert xs is not None and ys is not None
    assert len(xs) == 301  # -300 s .. 0 s at 1 Hz
    assert xs[0] == -300.0 and xs[-1] == 0.0
    assert set(ys.tolist()) == {10.0}
    view.set_window_minutes(20)
    assert view.window_s == 15 * 60


def test_ring_keeps_the_newest_points_in_order() -> None:
    ring = Ring(4)
    for i in range(6):
        ring.append(float(i), float(i * 10))
    xs, ys = ring.arrays()
    assert list(xs) == [2.0, 3.0, 4.0, 5.0]
    assert list(ys) == [20.0, 30.0, 40.0, 50.0]
    assert ring.last() == 50.0 and len(ring) == 4


def test_percentile_nearest_rank() -> None:
    assert percentile([30, 10, 20], 50) == 20.0
    assert percentile([5], 95) == 5.0
    assert math.isnan(percentile([], 50))


def test_no_gpu_hides_the_gpu_charts_with_one_line(view: MetricsView) -> None:
    view.show()
    bare = replace(sample(1.0, {"gpu0": 0}), gpu=GpuInventory(gpus=(), at=1.0))
    view.add_sample(bare)
    assert view.no_gpu.isVisibleTo(view)
    assert view.no_gpu.text() == "No GPU on this machine, so there are no GPU charts."
    assert not view.charts["gpu_util"].widget.isVisibleTo(view)
    assert not view.charts["vram"].widget.isVisibleTo(view)
    assert view.charts["tokens"].widget.isVisibleTo(view)
    view.add_sample(sample(2.0, {"gpu0": 0}))
    assert view.charts["vram"].widget.isVisibleTo(view) and not view.no_gpu.isVisibleTo(view)
