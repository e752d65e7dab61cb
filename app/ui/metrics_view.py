"""Rolling charts of the core's 1 Hz samples (never scraped from /metrics).

``MetricsHistory`` turns ``CoreSample``s into fixed-size numpy ring buffers of
derived series (tokens/s per pool, queue depth per priority, GPU utilization
and VRAM per GPU, TTFT p50/p95, tasks per minute); ``MetricsView`` draws them
with pyqtgraph, one ``setData`` per curve per sample.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent
from PySide6.QtGui import QPalette, QShowEvent
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from app.orchestrator.ports import GpuInfo, GpuInventory
from app.ui.bridge import Bridge

RING_CAPACITY = 1024  # > 15 minutes at 1 Hz
GIB = float(1 << 30)
COUNTER_KEYS = ("started", "rejected", "canceled")
SERIES_COLOURS = ("#3b82f6", "#e8590c", "#2e9d4f", "#c2255c", "#7048e8", "#0ca678", "#d9a400")
NAN = math.nan


class Ring:
    """A fixed-size ring of ``(x, y)`` float points backed by numpy arrays."""

    __slots__ = ("_count", "_head", "_x", "_y")

    def __init__(self, capacity: int = RING_CAPACITY) -> None:
        self._x = np.full(max(1, capacity), NAN)
        self._y = np.full(max(1, capacity), NAN)
        self._head = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, x: float, y: float) -> None:
        """Add a point, overwriting the oldest one when full. Never blocks."""
        self._x[self._head] = x
        self._y[self._head] = y
        self._head = (self._head + 1) % len(self._x)
        self._count = min(self._count + 1, len(self._x))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return copies of the x and y values, oldest first."""
        if self._count < len(self._x):
            return self._x[: self._count].copy(), self._y[: self._count].copy()
        order = np.r_[self._head : len(self._x), 0 : self._head]
        return self._x[order], self._y[order]

    def values(self) -> list[float]:
        """Return the y values, oldest first (for inspection and tests)."""
        return [float(v) for v in self.arrays()[1]]

    def last(self) -> float | None:
        """Return the newest y value, or None when empty."""
        return None if self._count == 0 else float(self._y[(self._head - 1) % len(self._y)])


def percentile(values: Sequence[float], q: float) -> float:
    """Return the nearest-rank ``q``-th percentile (0 < q <= 100); NaN when empty."""
    if not values:
        return NAN
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


class MetricsHistory:
    """Derived time series of the samples; each series is a ``Ring``.

    ``x`` values are the samples' monotonic ``at`` in seconds.
    """

    def __init__(self, capacity: int = RING_CAPACITY) -> None:
        self.capacity = capacity
        self.tokens_per_s: dict[str, Ring] = {}
        self.queue: dict[str, Ring] = {"interactive": Ring(capacity), "batch": Ring(capacity)}
        self.gpu_util: dict[int, Ring] = {}
        self.vram_used_gib: dict[int, Ring] = {}
        self.ttft: dict[str, Ring] = {"p50": Ring(capacity), "p95": Ring(capacity)}
        self.per_minute: dict[str, Ring] = {k: Ring(capacity) for k in COUNTER_KEYS}
        self.latest_at: float | None = None
        self._prev_tokens: dict[str, int] = {}
        self._prev_at: float | None = None
        self._minute: deque[tuple[float, dict[str, int]]] = deque()

    def _ring(self, table: dict[Any, Ring], key: Any) -> Ring:
        ring = table.get(key)
        if ring is None:
            ring = table[key] = Ring(self.capacity)
        return ring

    def ingest(self, sample: Any) -> None:
        """Add one CoreSample (``at``, ``pools``, ``gpu``, ``counters``, ``tokens_out``,
        ``ttfts``). A sample not newer than the previous one is ignored."""
        at = float(sample.at)
        if self.latest_at is not None and at <= self.latest_at:
            return
        self._tokens(at, sample.tokens_out)
        self._queues(at, sample.pools)
        self._gpus(at, sample.gpu)
        self.ttft["p50"].append(at, percentile(sample.ttfts, 50))
        self.ttft["p95"].append(at, percentile(sample.ttfts, 95))
        self._counters(at, sample.counters)
        self.latest_at = at

    def _tokens(self, at: float, tokens_out: dict[str, int]) -> None:
        dt = None if self._prev_at is None else at - self._prev_at
        for pool_id, total in tokens_out.items():
            before = self._prev_tokens.get(pool_id)
            if dt is not None and before is not None:
                self._ring(self.tokens_per_s, pool_id).append(at, max(0, total - before) / dt)
        self._prev_tokens = dict(tokens_out)
        self._prev_at = at

    def _queues(self, at: float, pools: Sequence[Any]) -> None:
        self.queue["interactive"].append(at, float(sum(p.queue.interactive for p in pools)))
        self.queue["batch"].append(at, float(sum(p.queue.batch for p in pools)))

    def _gpus(self, at: float, inventory: GpuInventory) -> None:
        for info in inventory.gpus:
            util = NAN if info.utilization_pct is None else float(info.utilization_pct)
            self._ring(self.gpu_util, info.index).append(at, util)
            self._ring(self.vram_used_gib, info.index).append(at, _vram_used_gib(info))

    def _counters(self, at: float, counters: dict[str, int]) -> None:
        self._minute.append((at, dict(counters)))
        while len(self._minute) > 1 and self._minute[0][0] < at - 60.0:
            self._minute.popleft()
        base = self._minute[0][1]
        for key in COUNTER_KEYS:
            count = max(0, counters.get(key, 0) - base.get(key, 0))
            self.per_minute[key].append(at, float(count))


def _vram_used_gib(info: GpuInfo) -> float:
    if info.vram_used_bytes is not None:
        return info.vram_used_bytes / GIB
    if info.vram_total_bytes is not None and info.vram_free_bytes is not None:
        return (info.vram_total_bytes - info.vram_free_bytes) / GIB
    return NAN


class Chart:
    """One pyqtgraph plot with a curve per series key."""

    def __init__(self, title: str, unit: str, y_max: float | None = None) -> None:
        self.widget = pg.PlotWidget()
        self.widget.setAccessibleName(title)
        self.plot = self.widget.getPlotItem()
        self.title = title
        self.plot.setTitle(title)
        self.plot.setLabel("left", unit)
        self.plot.setLabel("bottom", "seconds ago")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.legend = self.plot.addLegend(offset=(8, 8))
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.y_max = y_max
        self.plot.setYRange(0, y_max or 1.0, padding=0)

    def curve(self, name: str) -> pg.PlotDataItem:
        """Return the curve named ``name``, creating it with the next colour."""
        item = self.curves.get(name)
        if item is None:
            colour = SERIES_COLOURS[len(self.curves) % len(SERIES_COLOURS)]
            item = self.plot.plot(name=name, pen=pg.mkPen(colour, width=2), connect="finite")
            self.curves[name] = item
        return item

    def show(self, name: str, ring: Ring, now: float, window_s: float) -> float:
        """Draw ``ring``'s points of the last ``window_s`` seconds before ``now``;
        returns their largest finite value (0.0 when none)."""
        xs, ys = ring.arrays()
        keep = xs >= now - window_s
        shown = ys[keep]
        self.curve(name).setData(xs[keep] - now, shown, connect="finite")
        finite = shown[np.isfinite(shown)]
        return float(finite.max()) if finite.size else 0.0

    def fit_y(self, highest: float) -> None:
        """Show 0 .. ``highest`` plus headroom (a fixed range when the chart has one)."""
        top = self.y_max if self.y_max is not None else max(1.0, highest * 1.1)
        self.plot.setYRange(0, top, padding=0)

    def set_window(self, window_s: float) -> None:
        self.plot.setXRange(-window_s, 0, padding=0.01)

    def apply_palette(self, palette: QPalette) -> None:
        """Follow the system palette: background, axes and title colours."""
        text = palette.color(QPalette.ColorRole.Text)
        self.widget.setBackground(palette.color(QPalette.ColorRole.Base))
        for axis in ("left", "bottom"):
            self.plot.getAxis(axis).setPen(pg.mkPen(text))
            self.plot.getAxis(axis).setTextPen(pg.mkPen(text))
        self.plot.titleLabel.setAttr("color", text.name())
        self.plot.titleLabel.setText(self.plot.titleLabel.text)
        self.legend.setLabelTextColor(text)


class MetricsView(QWidget):
    """Six rolling charts fed by ``bridge.sampled``; the window spans 5-15 minutes."""

    def __init__(
        self, bridge: Bridge, parent: QWidget | None = None, window_minutes: int = 10
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.history = MetricsHistory()
        self.charts = {
            "tokens": Chart("Tokens/s per pool", "tokens/s"),
            "queue": Chart("Queue depth per priority", "tasks"),
            "gpu_util": Chart("GPU utilization", "%", y_max=100.0),
            "vram": Chart("VRAM used per GPU", "GiB"),
            "ttft": Chart("Time to first token", "ms"),
            "tasks": Chart("Tasks per minute", "tasks/min"),
        }
        self._build(window_minutes)
        self.apply_palette()
        bridge.sampled.connect(self.add_sample)

    def _build(self, window_minutes: int) -> None:
        self.window_box = QSpinBox(self)
        self.window_box.setRange(5, 15)
        self.window_box.setSuffix(" min")
        self.window_box.setValue(min(15, max(5, window_minutes)))
        self.window_box.setAccessibleName("Chart window in minutes")
        self.window_box.valueChanged.connect(self._on_window)
        label = QLabel("&Window:", self)
        label.setBuddy(self.window_box)
        self.status = QLabel("Waiting for the first sample…", self)
        self.no_gpu = QLabel("No GPU on this machine, so there are no GPU charts.", self)
        self.no_gpu.setVisible(False)
        bar = QHBoxLayout()
        bar.addWidget(label)
        bar.addWidget(self.window_box)
        bar.addSpacing(16)
        bar.addWidget(self.no_gpu)
        bar.addStretch(1)
        bar.addWidget(self.status)
        grid = QGridLayout()
        for i, chart in enumerate(self.charts.values()):
            grid.addWidget(chart.widget, i // 2, i % 2)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addLayout(grid, 1)
        self._on_window(self.window_box.value())

    @property
    def window_s(self) -> float:
        """Return the chart window in seconds."""
        return self.window_box.value() * 60.0

    def set_window_minutes(self, minutes: int) -> None:
        """Set the rolling window (clamped to 5-15 minutes)."""
        self.window_box.setValue(minutes)

    def _on_window(self, _minutes: int) -> None:
        for chart in self.charts.values():
            chart.set_window(self.window_s)
        self.redraw()

    def add_sample(self, sample: Any) -> None:
        """Ingest one CoreSample and redraw when visible. Never blocks."""
        self.history.ingest(sample)
        if self.isVisible():
            self.redraw()

    def redraw(self) -> None:
        """Push every series' points in the window to its curve."""
        now = self.history.latest_at
        if now is None:
            return
        h, charts, win = self.history, self.charts, self.window_s
        groups: list[tuple[Chart, dict[Any, Ring], str]] = [
            (charts["tokens"], h.tokens_per_s, "{}"),
            (charts["queue"], h.queue, "{}"),
            (charts["gpu_util"], h.gpu_util, "GPU {}"),
            (charts["vram"], h.vram_used_gib, "GPU {}"),
            (charts["ttft"], h.ttft, "{}"),
            (charts["tasks"], h.per_minute, "{}"),
        ]
        for chart, table, label in groups:
            highest = 0.0
            for key, ring in table.items():
                highest = max(highest, chart.show(label.format(key), ring, now, win))
            chart.fit_y(highest)
        has_gpu = bool(h.gpu_util)
        for name in ("gpu_util", "vram"):
            charts[name].widget.setVisible(has_gpu)
        self.no_gpu.setVisible(not has_gpu)
        self.status.setText(self._status_text())

    def _status_text(self) -> str:
        total = sum(r.last() or 0.0 for r in self.history.tokens_per_s.values())
        depth = sum(r.last() or 0.0 for r in self.history.queue.values())
        return f"{total:.1f} tokens/s · {depth:.0f} queued"

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.redraw()

    def apply_palette(self) -> None:
        """Recolour the charts from the current palette."""
        for chart in self.charts.values():
            chart.apply_palette(self.palette())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self.apply_palette()
