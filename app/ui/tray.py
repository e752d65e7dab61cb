"""Tray icon: status colour, tooltip, menu and notifications.

``tray_status`` decides the colour from pool views (pure). ``Tray`` degrades to
an inert object when the desktop has no system tray: no icon, no crash, and
``active`` is False so the window asks before quitting instead of hiding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import QMenu, QSystemTrayIcon, QWidget

from app.orchestrator.contracts import PoolView
from app.orchestrator.lifecycle import PoolState
from app.ui.api_urls import api_urls
from app.ui.bridge import Bridge
from app.ui.icons import tray_icon
from app.ui.pools_view import TokenRates

SATURATION = 0.8
REFUSAL_NOTICE_EVERY_S = 60.0


class TrayStatus(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    DEGRADED = "degraded"
    FAILED = "failed"


def queue_fill(pool: PoolView, capacity: int | None) -> float:
    """Return the fullest priority queue of ``pool`` as a fraction of ``capacity`` (0 when
    the capacity is unknown)."""
    if not capacity:
        return 0.0
    return max(pool.queue.interactive, pool.queue.batch) / capacity


def tray_status(pools: Sequence[PoolView], queue_capacity: int | None = None) -> TrayStatus:
    """Return the tray colour for ``pools``.

    failed: any pool failed; degraded: any pool starting or needing a model, or a
    queue more than 80% of ``queue_capacity``; busy: any slot or queue in use;
    idle otherwise. Pure.
    """
    if any(p.state is PoolState.FAILED for p in pools):
        return TrayStatus.FAILED
    if any(p.state in (PoolState.STARTING, PoolState.NEEDS_MODEL) for p in pools) or any(
        queue_fill(p, queue_capacity) > SATURATION for p in pools
    ):
        return TrayStatus.DEGRADED
    if any(p.slots_busy or p.queue.interactive or p.queue.batch for p in pools):
        return TrayStatus.BUSY
    return TrayStatus.IDLE


def tray_tooltip(status: TrayStatus, pools: Sequence[PoolView], tokens_per_s: float) -> str:
    """Return the tooltip text: status, total tokens/s and queue depth per priority."""
    inter = sum(p.queue.interactive for p in pools)
    batch = sum(p.queue.batch for p in pools)
    return (
        f"llama-orch — {status.value}\n{tokens_per_s:.1f} tokens/s · queued: "
        f"{inter} interactive, {batch} batch"
    )


def saturated_queues(pools: Sequence[PoolView], capacity: int | None) -> set[tuple[str, str]]:
    """Return {(pool_id, priority)} of the queues at ``capacity`` (empty when unknown)."""
    if not capacity:
        return set()
    out: set[tuple[str, str]] = set()
    for p in pools:
        for prio, depth in (("interactive", p.queue.interactive), ("batch", p.queue.batch)):
            if depth >= capacity:
                out.add((p.pool_id, prio))
    return out


class PauseAdmissions(QAction):
    """ "Pause admissions" / "Resume admissions": drains or resumes every pool."""

    def __init__(self, bridge: Bridge, parent: QObject | None = None) -> None:
        super().__init__("Pause admissions", parent)
        self._bridge = bridge
        self.paused = False
        self.setToolTip("Stop starting new tasks on every pool (running tasks finish)")
        self.triggered.connect(self.toggle)
        bridge.sampled.connect(self._on_sample)

    def toggle(self) -> None:
        """Drain all pools when admitting, else resume them. Never blocks."""
        if self.paused:
            self._bridge.run(self._bridge.resume_all(), "resuming admissions")
        else:
            self._bridge.run(self._bridge.drain_all(), "pausing admissions")
        self._set_paused(not self.paused)

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.setText("Resume admissions" if paused else "Pause admissions")

    def _on_sample(self, sample: Any) -> None:
        pools = sample.pools
        self._set_paused(bool(pools) and all(p.draining for p in pools))


class Tray(QObject):
    """The tray icon and its menu; inert (``active`` False) without a system tray."""

    def __init__(
        self,
        bridge: Bridge,
        window: QWidget,
        pause_action: QAction,
        quit_action: QAction,
        *,
        available: Callable[[], bool] = QSystemTrayIcon.isSystemTrayAvailable,
        rates: TokenRates | None = None,
        parent: QObject | None = None,
    ) -> None:
        """``rates`` are token rates another view keeps up to date from the same
        samples (connected to ``bridge.sampled`` before this tray); without them the
        tray keeps its own."""
        super().__init__(parent)
        self._bridge = bridge
        self._window = window
        self.status = TrayStatus.IDLE
        self.tooltip = tray_tooltip(self.status, [], 0.0)
        self.notifications: list[tuple[str, str]] = []
        self._owns_rates = rates is None
        self._rates = rates if rates is not None else TokenRates()
        self._states: dict[str, PoolState] = {}
        self._saturated: set[tuple[str, str]] = set()
        self._rejected: int | None = None
        self._refusal_noted_at: float | None = None
        self.icon: QSystemTrayIcon | None = None
        self.menu: QMenu | None = None
        if available():
            self._create(pause_action, quit_action)
        bridge.sampled.connect(self._on_sample)
        bridge.poolsChanged.connect(self._on_pools)

    @property
    def active(self) -> bool:
        """Return True when an icon is shown in a system tray."""
        return self.icon is not None

    def _create(self, pause_action: QAction, quit_action: QAction) -> None:
        self.menu = QMenu()
        self.show_action = self.menu.addAction("Hide window")
        self.show_action.triggered.connect(self.toggle_window)
        self.menu.addAction(pause_action)
        self.copy_menu = self.menu.addMenu("Copy API URL")
        self.copy_menu.aboutToShow.connect(self._fill_copy_menu)
        self._fill_copy_menu()
        self.menu.addSeparator()
        self.menu.addAction(quit_action)
        self.menu.aboutToShow.connect(self._label_show_action)
        self.icon = QSystemTrayIcon(tray_icon(self.status.value), self)
        self.icon.setContextMenu(self.menu)
        self.icon.setToolTip(self.tooltip)
        self.icon.activated.connect(self._on_activated)
        self.icon.show()

    def hide(self) -> None:
        """Remove the icon from the tray (at quit)."""
        if self.icon is not None:
            self.icon.hide()

    # ---- menu ---------------------------------------------------------------

    def _label_show_action(self) -> None:
        self.show_action.setText("Hide window" if self._window.isVisible() else "Show window")

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.toggle_window()

    def toggle_window(self) -> None:
        """Show and raise the window when hidden, hide it when shown."""
        if self._window.isVisible() and not self._window.isMinimized():
            self._window.hide()
        else:
            self._window.showNormal()
            self._window.raise_()
            self._window.activateWindow()

    def copy_api_url(self, url: str | None = None) -> None:
        """Put ``url`` (default: the first usable API URL) on the clipboard."""
        QGuiApplication.clipboard().setText(url or api_urls(self._bridge.controls.api_url())[0])

    def _fill_copy_menu(self) -> None:
        self.copy_menu.clear()
        for url in api_urls(self._bridge.controls.api_url()):
            self.copy_menu.addAction(url, functools.partial(self.copy_api_url, url))

    # ---- status ---------------------------------------------------------------

    def _queue_capacity(self) -> int | None:
        settings = self._bridge.controls.current_settings()
        admission = getattr(settings, "admission", None)
        return getattr(admission, "queue_capacity", None)

    @property
    def rates(self) -> TokenRates:
        """Return the token rates the tooltip shows."""
        return self._rates

    def _on_sample(self, sample: Any) -> None:
        pools: list[PoolView] = list(sample.pools)
        if self._owns_rates:
            self._rates.update(sample.at, sample.tokens_out)
        capacity = self._queue_capacity()
        self._set_status(tray_status(pools, capacity), pools)
        for pool in pools:
            self._on_pool(pool)
        self._check_saturation(pools, capacity)
        self._check_rejections(sample.counters, sample.at)

    def _set_status(self, status: TrayStatus, pools: Sequence[PoolView]) -> None:
        self.tooltip = tray_tooltip(status, pools, self._rates.total())
        changed, self.status = status != self.status, status
        if self.icon is not None:
            if changed:
                self.icon.setIcon(tray_icon(status.value))
            self.icon.setToolTip(self.tooltip)

    def _on_pools(self, pools: Sequence[PoolView]) -> None:
        for pool in pools:
            self._on_pool(pool)

    def _on_pool(self, pool: PoolView) -> None:
        before = self._states.get(pool.pool_id)
        self._states[pool.pool_id] = pool.state
        if pool.state is PoolState.FAILED and before not in (None, PoolState.FAILED):
            detail = pool.detail or "the engine stopped"
            self.notify(f"Pool {pool.pool_id} failed", detail)

    def _check_saturation(self, pools: Sequence[PoolView], capacity: int | None) -> None:
        full = saturated_queues(pools, capacity)
        for pool_id, prio in sorted(full - self._saturated):
            self.notify(
                f"Queue full on {pool_id}",
                f"The {prio} queue holds {capacity} tasks; new {prio} tasks are refused.",
            )
        self._saturated = full

    def _check_rejections(self, counters: Mapping[str, int], at: float) -> None:
        rejected = counters.get("rejected", 0)
        before, self._rejected = self._rejected, rejected
        if before is None or rejected <= before:
            return
        last = self._refusal_noted_at
        if last is not None and at - last < REFUSAL_NOTICE_EVERY_S:
            return
        self._refusal_noted_at = at
        n = rejected - before
        self.notify("Tasks refused", f"{n} task(s) were refused (queue full or no capacity).")

    def notify(self, title: str, message: str) -> None:
        """Record a notification and show it as a tray balloon when a tray exists."""
        self.notifications.append((title, message))
        if self.icon is not None:
            self.icon.showMessage(title, message, tray_icon(self.status.value), 8000)
