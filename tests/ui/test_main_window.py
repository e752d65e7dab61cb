"""Main window: tabs, actions, status bar errors, banner, geometry and close policy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMenu, QWidget

from app.config import parse_settings
from app.orchestrator.contracts import Priority, TaskView
from app.ui.bridge import CoreSample
from app.ui.main_window import MainWindow
from app.ui.settings_dialog import SettingsDialog
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge, FakeControls, new_task_id, pool_view


def task_view(state: str) -> TaskView:
    return TaskView(
        task_id=new_task_id(),
        state=state,
        priority=Priority.INTERACTIVE,
        pool_id="gpu0",
        session_id=None,
        identity="lan:10.0.0.5",
        correlation_id="c",
        created_at=0.0,
        queue_position=None,
        queued_ms=None,
        ttft_ms=None,
        decode_time_ms=None,
        tokens_in=3,
        tokens_out=0,
        finish_reason=None,
        error=None,
        decision_summary="",
    )


class Asker:
    """Records questions and answers with ``answer``."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.questions: list[str] = []

    def __call__(self, _parent: QWidget, title: str, text: str) -> bool:
        self.questions.append(f"{title} {text}")
        return self.answer


@pytest.fixture
def bridge() -> FakeBridge:
    return FakeBridge(FakeControls(parse_settings({}, env={})))


@pytest.fixture
def make_window(qtbot: Any, tmp_path: Path) -> Iterator[Callable[..., MainWindow]]:
    """Build windows without a tray and with QSettings in a temporary file."""
    alive: list[MainWindow] = []

    def build(bridge: FakeBridge, **kw: Any) -> MainWindow:
        kw.setdefault("tray_available", lambda: False)
        kw.setdefault("settings", QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
        window = MainWindow(bridge, **kw)
        qtbot.addWidget(window)
        alive.append(window)
        return window

    yield build
    for window in alive:
        window.tray.hide()
    alive.clear()


def test_builds_with_every_tab_menu_and_the_api_url(
    bridge: FakeBridge, make_window: Callable[..., MainWindow]
) -> None:
    window = make_window(bridge)
    titles = [
        window.tabs.tabText(i).replace("&&", "&").replace("&", "", 1)
        for i in range(window.tabs.count())
    ]
    assert titles == ["Pools", "Chat", "Decisions", "Metrics", "Tasks & logs", "Models"]
    menu_texts = [a.text() for a in window.menuBar().actions()]
    assert menu_texts == ["&File", "&View", "&Help"]
    file_menu = window.menuBar().actions()[0].menu()
    assert isinstance(file_menu, QMenu)
    file_actions = [a.text() for a in file_menu.actions()]
    assert file_actions == [
        "&Settings…", "Pause admissions", "",
        "Open &config file", "Open &logs folder", "Open &models folder", "", "&Quit",
    ]  # fmt: skip
    assert window.api_label.text() == "API: http://127.0.0.1:8080"
    assert window.banner is None


def test_errors_go_to_the_status_bar_and_the_history(
    bridge: FakeBridge, make_window: Callable[..., MainWindow]
) -> None:
    window = make_window(bridge)
    assert window.errors_button.isHidden()
    bridge.report_error("reload of pool gpu0 failed: file not found")
    assert window.statusBar().currentMessage() == "reload of pool gpu0 failed: file not found"
    bridge.report_error("second")
    assert [m for _, m in window.errors] == ["reload of pool gpu0 failed: file not found", "second"]
    assert not window.errors_button.isHidden()
    assert window.errors_button.text() == "⚠ 2"
    window._fill_errors_menu()
    texts = [a.text() for a in window.errors_menu.actions()]
    assert texts[0].endswith("second") and texts[-1] == "Clear"


def test_banner_is_shown_and_dismissible(
    bridge: FakeBridge, make_window: Callable[..., MainWindow]
) -> None:
    text = "You're running the demo model. Add a real GGUF model: Pools → Set model…"
    window = make_window(bridge, banner=text)
    window.show()
    assert window.banner is not None and window.banner.isVisible()
    assert window.banner.label.text() == text
    window.banner.dismiss_button.click()
    assert not window.banner.isVisible()


def test_banner_leads_to_the_models_view(
    bridge: FakeBridge, make_window: Callable[..., MainWindow]
) -> None:
    window = make_window(bridge, banner="demo model")
    assert window.banner is not None and window.banner.action_button is not None
    assert window.banner.action_button.text() == "Get a model"

    window.banner.action_button.click()

    assert window.tabs.currentWidget() is window.models_view


def test_pools_view_without_a_serving_model_leads_to_the_models_view(
    bridge: FakeBridge, make_window: Callable[..., MainWindow]
) -> None:
    bridge.pool_list = [pool_view("gpu0", state="needs_model", ready=False)]
    window = make_window(bridge)
    button = window.pools_view.get_model_button
    assert button is not None and button.text() == "Get a model…"

    button.click()

    assert window.tabs.currentWidget() is window.models_view


def test_pause_admissions_drains_all_then_resumes(
    bridge: FakeBridge, make_window: Callable[..., MainWindow], qloop: QtAsync
) -> None:
    window = make_window(bridge)
    window.pause_action.trigger()
    window.pause_action.trigger()
    assert bridge.commands == [("drain_all", None), ("resume_all", None)]


def test_settings_action_opens_the_settings_dialog(
    bridge: FakeBridge, make_window: Callable[..., MainWindow], qloop: QtAsync
) -> None:
    window = make_window(bridge)
    window.show()
    window.settings_action.trigger()
    dialog = window.settings_dialog
    assert isinstance(dialog, SettingsDialog) and dialog.isVisible()
    assert window.open_settings() is dialog  # a second trigger raises the same one
    dialog.close()


def test_close_without_tray_asks_when_tasks_run_and_stays_on_no(
    bridge: FakeBridge, make_window: Callable[..., MainWindow]
) -> None:
    asker = Asker(answer=False)
    window = make_window(bridge, ask=asker)
    quits: list[bool] = []
    window.quitRequested.connect(lambda: quits.append(True))
    bridge.task_list = [task_view("done"), task_view("streaming"), task_view("queued")]
    window.show()
    window.close()
    assert window.isVisible()
    assert quits == []
    assert len(asker.questions) == 1
    assert "2 task(s) are still queued or running" in asker.questions[0]
    asker.answer = True
    window.close()
    assert not window.isVisible()
    assert quits == [True]


def test_close_without_tray_and_without_tasks_quits_without_asking(
    bridge: FakeBridge, make_window: Callable[..., MainWindow]
) -> None:
    asker = Asker(answer=False)
    window = make_window(bridge, ask=asker)
    quits: list[bool] = []
    window.quitRequested.connect(lambda: quits.append(True))
    bridge.task_list = [task_view("done"), task_view("failed")]
    window.show()
    window.close()
    assert asker.questions == [] and quits == [True]


def test_close_with_a_tray_hides_and_keeps_running(
    bridge: FakeBridge, make_window: Callable[..., MainWindow]
) -> None:
    asker = Asker(answer=True)
    window = make_window(bridge, ask=asker, tray_available=lambda: True)
    quits: list[bool] = []
    window.quitRequested.connect(lambda: quits.append(True))
    bridge.task_list = [task_view("streaming")]
    window.show()
    window.close()
    assert not window.isVisible()
    assert quits == [] and asker.questions == []
    assert window.tray.notifications[0][0] == "llama-orch keeps running"
    window.quit_action.trigger()  # the tray's Quit still asks about running tasks
    assert len(asker.questions) == 1 and quits == [True]


def test_geometry_and_tab_are_remembered(
    bridge: FakeBridge, make_window: Callable[..., MainWindow]
) -> None:
    first = make_window(bridge)
    first.resize(640, 480)
    first.tabs.setCurrentIndex(3)
    first.show()
    first.close()
    second = make_window(FakeBridge(bridge.controls))
    assert second.tabs.currentIndex() == 3
    assert (second.width(), second.height()) == (640, 480)


def test_tray_and_pools_view_show_one_token_rate(
    bridge: FakeBridge, make_window: Callable[..., MainWindow]
) -> None:
    window = make_window(bridge)
    for at, tokens in ((10.0, 0), (12.0, 84)):
        bridge.sampled.emit(
            CoreSample(
                at=at,
                pools=bridge.pools(),
                gpu=bridge.gpu(),
                counters={"started": 0, "rejected": 0, "canceled": 0, "enqueued": 0},
                tokens_out={"gpu0": tokens},
                ttfts=[],
            )
        )
    assert window.tray.rates is window.pools_view.rates
    assert window.pools_view.rates.rates == {"gpu0": 42.0}
    assert "42.0 tokens/s" in window.tray.tooltip


def test_ctrl_2_and_a_new_chat_put_the_cursor_in_the_message_box(make_window: Any) -> None:
    window = make_window(FakeBridge())
    window.show()
    window.activateWindow()
    assert QTest.qWaitForWindowActive(window, 2000)
    window.tabs.setCurrentIndex(0)
    QTest.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentWidget() is window.chat
    assert QApplication.focusWidget() is window.chat.current().prompt
    conv = window.chat.new_conversation()
    assert QApplication.focusWidget() is conv.prompt
    assert "press Enter" in conv.transcript.placeholderText()
    window.hide()
