"""Tray: the pure status function, degradation without a tray, menu and notifications."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import QSystemTrayIcon, QWidget

from app.config import parse_settings
from app.orchestrator.contracts import PoolView, QueueDepth
from app.ui.api_urls import interface_addresses
from app.ui.bridge import CoreSample
from app.ui.icons import tray_icon
from app.ui.tray import (
    PauseAdmissions,
    Tray,
    TrayStatus,
    saturated_queues,
    tray_status,
    tray_tooltip,
)
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge, FakeControls, pool_view

IDLE = pool_view("a")
BUSY = pool_view("b", slots_busy=1)
QUEUED = pool_view("c", queue=QueueDepth(interactive=0, batch=2))
STARTING = pool_view("d", state="starting")
NEEDS_MODEL = pool_view("e", state="needs_model")
FAILED = pool_view("f", state="failed")
NEARLY_FULL = pool_view("g", slots_busy=1, queue=QueueDepth(interactive=9, batch=0))
EIGHTY = pool_view("h", slots_busy=1, queue=QueueDepth(interactive=8, batch=0))


@pytest.mark.parametrize(
    ("pools", "capacity", "expected"),
    [
        ([], 10, TrayStatus.IDLE),
        ([IDLE], 10, TrayStatus.IDLE),
        ([IDLE, BUSY], 10, TrayStatus.BUSY),
        ([QUEUED], 10, TrayStatus.BUSY),
        ([BUSY, STARTING], 10, TrayStatus.DEGRADED),
        ([NEEDS_MODEL], 10, TrayStatus.DEGRADED),
        ([EIGHTY], 10, TrayStatus.BUSY),  # exactly 80% is not "more than 80%"
        ([NEARLY_FULL], 10, TrayStatus.DEGRADED),
        ([NEARLY_FULL], None, TrayStatus.BUSY),  # capacity unknown: no fill rule
        ([NEARLY_FULL, STARTING, FAILED], 10, TrayStatus.FAILED),
        ([FAILED, IDLE], 10, TrayStatus.FAILED),
    ],
)
def test_tray_status_table(
    pools: list[PoolView], capacity: int | None, expected: TrayStatus
) -> None:
    assert tray_status(pools, capacity) is expected


def test_tooltip_and_saturated_queues() -> None:
    pools = [BUSY, QUEUED, NEARLY_FULL]
    text = tray_tooltip(TrayStatus.BUSY, pools, 42.25)
    assert text == "llama-orch — busy\n42.2 tokens/s · queued: 9 interactive, 2 batch"
    assert saturated_queues(pools, 9) == {("g", "interactive")}
    assert saturated_queues(pools, None) == set()


# ---------------------------------------------------------------- the Tray object


def make_sample(
    pools: list[PoolView], at: float, tokens: dict[str, int], rejected: int = 0
) -> CoreSample:
    counters = {"started": 0, "rejected": rejected, "canceled": 0, "enqueued": 0}
    return CoreSample(
        at=at,
        pools=pools,
        gpu=FakeBridge().inventory,
        counters=counters,
        tokens_out=tokens,
        ttfts=[],
    )


@pytest.fixture
def bridge() -> FakeBridge:
    settings = parse_settings({"admission": {"queue_capacity": 4}}, env={})
    return FakeBridge(FakeControls(settings))


@pytest.fixture
def parts(qtbot: Any, bridge: FakeBridge) -> Iterator[tuple[QWidget, QAction, QAction]]:
    window = QWidget()
    qtbot.addWidget(window)
    pause = PauseAdmissions(bridge, window)
    quit_action = QAction("Quit", window)
    yield window, pause, quit_action


def make_tray(bridge: FakeBridge, parts: Any, available: bool) -> Tray:
    window, pause, quit_action = parts
    return Tray(bridge, window, pause, quit_action, available=lambda: available)


def test_without_a_system_tray_it_degrades_quietly(bridge: FakeBridge, parts: Any) -> None:
    assert not QSystemTrayIcon.isSystemTrayAvailable()  # offscreen has no tray
    window, pause, quit_action = parts
    tray = Tray(bridge, window, pause, quit_action)
    assert not tray.active
    assert tray.icon is None and tray.menu is None
    bridge.sampled.emit(make_sample([pool_view("gpu0", state="failed")], 1.0, {"gpu0": 0}))
    assert tray.status is TrayStatus.FAILED
    tray.notify("title", "message")  # no icon: recorded, nothing shown, no crash
    tray.hide()
    assert ("title", "message") in tray.notifications


def test_status_colour_and_tooltip_follow_samples(bridge: FakeBridge, parts: Any) -> None:
    tray = make_tray(bridge, parts, True)
    assert tray.active and tray.icon is not None
    busy = [pool_view("gpu0", slots_busy=1, queue=QueueDepth(interactive=1, batch=0))]
    bridge.sampled.emit(make_sample(busy, 1.0, {"gpu0": 100}))
    bridge.sampled.emit(make_sample(busy, 2.0, {"gpu0": 150}))
    assert tray.status is TrayStatus.BUSY
    assert (
        tray.icon.toolTip() == "llama-orch — busy\n50.0 tokens/s · queued: 1 interactive, 0 batch"
    )
    tray.hide()


def test_menu_pause_resume_copy_and_show_hide(
    qtbot: Any, qloop: QtAsync, bridge: FakeBridge, parts: Any
) -> None:
    window, pause, _quit = parts
    tray = make_tray(bridge, parts, True)
    assert tray.menu is not None
    texts = [a.text() for a in tray.menu.actions() if not a.isSeparator()]
    assert texts == ["Hide window", "Pause admissions", "Copy API URL", "Quit"]  # a submenu
    pause.trigger()
    assert bridge.commands == [("drain_all", None)]
    assert pause.text() == "Resume admissions"
    pause.trigger()
    assert bridge.commands[-1] == ("resume_all", None)
    assert pause.text() == "Pause admissions"
    tray.copy_api_url()
    assert QGuiApplication.clipboard().text() == "http://127.0.0.1:8080"
    window.show()
    tray.toggle_window()
    assert not window.isVisible()
    tray.toggle_window()
    assert window.isVisible()
    tray.hide()


def test_notifies_once_when_a_pool_fails(bridge: FakeBridge, parts: Any) -> None:
    tray = make_tray(bridge, parts, True)
    bridge.poolsChanged.emit((pool_view("gpu0", state="ready"),))
    failed = pool_view("gpu0", state="failed", detail="engine exited with code 139")
    bridge.poolsChanged.emit((failed,))
    bridge.sampled.emit(make_sample([failed], 1.0, {"gpu0": 0}))
    assert tray.notifications == [("Pool gpu0 failed", "engine exited with code 139")]
    assert tray.status is TrayStatus.FAILED
    tray.hide()


def test_notifies_when_a_queue_saturates_and_again_after_it_drains(
    bridge: FakeBridge, parts: Any
) -> None:
    tray = make_tray(bridge, parts, False)
    full = [pool_view("gpu0", slots_busy=2, queue=QueueDepth(interactive=4, batch=0))]
    calm = [pool_view("gpu0", slots_busy=2, queue=QueueDepth(interactive=1, batch=0))]
    for i, pools in enumerate((full, full, calm, full)):
        bridge.sampled.emit(make_sample(pools, float(i), {"gpu0": 0}))
    titles = [t for t, _ in tray.notifications]
    assert titles == ["Queue full on gpu0", "Queue full on gpu0"]
    assert "interactive queue holds 4 tasks" in tray.notifications[0][1]


def test_refusals_notify_at_most_once_a_minute(bridge: FakeBridge, parts: Any) -> None:
    tray = make_tray(bridge, parts, False)
    pools = [pool_view("gpu0")]
    for at, rejected in ((0.0, 0), (1.0, 3), (2.0, 5), (70.0, 6)):
        bridge.sampled.emit(make_sample(pools, at, {"gpu0": 0}, rejected))
    assert [m for _, m in tray.notifications] == [
        "3 task(s) were refused (queue full or no capacity).",
        "1 task(s) were refused (queue full or no capacity).",
    ]


def test_a_wildcard_bind_copies_real_lan_urls(
    qtbot: Any, qloop: QtAsync, bridge: FakeBridge, parts: Any
) -> None:
    bridge.controls.api_url = lambda: "http://0.0.0.0:8090"  # type: ignore[method-assign]
    tray = make_tray(bridge, parts, True)
    tray._fill_copy_menu()
    urls = [a.text() for a in tray.copy_menu.actions()]
    assert urls and all("0.0.0.0" not in u and u.endswith(":8090") for u in urls)
    assert len(urls) == len([a for a in interface_addresses() if ":" not in a])
    tray.copy_menu.actions()[0].trigger()
    assert QGuiApplication.clipboard().text() == urls[0]
    tray.hide()


def test_tray_states_look_different() -> None:
    images = {
        s: tray_icon(s).pixmap(32, 32).toImage() for s in ("idle", "busy", "degraded", "failed")
    }
    keys = {s: bytes(img.constBits()) for s, img in images.items()}
    assert len(set(keys.values())) == 4
    grey = images["idle"].pixelColor(16, 4)
    assert grey.saturation() > 80  # a branded colour, not a grey disc
