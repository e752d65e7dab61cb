"""The main window: tabs, menu and toolbar, status bar with errors, tray and close policy."""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMenu,
    QSystemTrayIcon,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.ui.api_urls import api_urls
from app.ui.banner import Banner
from app.ui.bridge import Bridge
from app.ui.chat_panel import ChatPanel
from app.ui.chat_store import ChatStore
from app.ui.decisions_view import DecisionsView
from app.ui.desktop_menus import DesktopActions
from app.ui.icons import app_icon
from app.ui.metrics_view import MetricsView
from app.ui.models_view import ModelsView
from app.ui.pools_view import AskYesNo, ModelChooser, PoolsView, ask_yes_no
from app.ui.settings_dialog import SettingsDialog
from app.ui.tasks_view import TasksView
from app.ui.tray import PauseAdmissions, Tray

Ask = AskYesNo

ERROR_SHOWN_MS = 10_000
ERRORS_KEPT = 50
TAB_TITLES = ("&Pools", "&Chat", "&Decisions", "&Metrics", "&Tasks && logs", "M&odels")


class MainWindow(QMainWindow):
    """The llama-orch window. Emits ``quitRequested`` when the app should exit."""

    quitRequested = Signal()

    def __init__(
        self,
        bridge: Bridge,
        *,
        banner: str | None = None,
        ask: Ask = ask_yes_no,
        tray_available: Callable[[], bool] = QSystemTrayIcon.isSystemTrayAvailable,
        choose_model: ModelChooser | None = None,
        settings: QSettings | None = None,
        chat_store: ChatStore | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._ask = ask
        self._settings = settings if settings is not None else QSettings()
        self._quitting = False
        self._told_about_tray = False
        self.errors: deque[tuple[float, str]] = deque(maxlen=ERRORS_KEPT)
        self.settings_dialog: SettingsDialog | None = None
        self.setWindowTitle("llama-orch")
        self.setWindowIcon(app_icon())
        self._build_tabs(choose_model, banner, chat_store)
        self._build_actions()
        self._build_status_bar()
        # after the pools view, so its token rates are updated first on each sample
        self.tray = Tray(
            bridge,
            self,
            self.pause_action,
            self.quit_action,
            available=tray_available,
            rates=self.pools_view.rates,
        )
        bridge.errorRaised.connect(self.show_error)
        bridge.sampled.connect(self._on_sample)
        self._restore_geometry()

    # ---- construction -----------------------------------------------------------

    def _build_tabs(
        self, choose_model: ModelChooser | None, banner: str | None, store: ChatStore | None
    ) -> None:
        b = self._bridge
        self.pools_view = PoolsView(b, choose_model=choose_model, ask=self._ask)
        self.chat = ChatPanel(b, store=store)
        self.chat.navigate.connect(self.navigate)
        self.decisions = DecisionsView(b)
        self.chat.taskLabelled.connect(self.decisions.set_label)
        self.metrics = MetricsView(b)
        self.tasks = TasksView(b)
        self.models_view = ModelsView(b)
        self.pools_view.getModel.connect(self.show_models)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        pages = (
            self.pools_view, self.chat, self.decisions, self.metrics, self.tasks, self.models_view
        )  # fmt: skip
        for page, title in zip(pages, TAB_TITLES, strict=True):
            self.tabs.addTab(page, title)
        self.tabs.currentChanged.connect(self._on_tab)
        self.banner = Banner(banner, action="Get a model") if banner else None
        if self.banner is not None:
            self.banner.actionClicked.connect(self.show_models)
        central = QWidget()
        box = QVBoxLayout(central)
        box.setContentsMargins(4, 4, 4, 4)
        if self.banner is not None:
            box.addWidget(self.banner)
        box.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

    def _build_actions(self) -> None:
        self.settings_action = QAction("&Settings…", self)
        self.settings_action.setShortcut(QKeySequence("Ctrl+,"))
        self.settings_action.triggered.connect(self.open_settings)
        self.pause_action = PauseAdmissions(self._bridge, self)
        self.pause_action.setShortcut(QKeySequence("Ctrl+Shift+P"))
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.request_quit)
        app_menu = self.menuBar().addMenu("&File")
        app_menu.addAction(self.settings_action)
        app_menu.addAction(self.pause_action)
        app_menu.addSeparator()
        self.desktop_actions = DesktopActions(self, self._bridge)
        self.desktop_actions.add_to_file(app_menu)
        app_menu.addSeparator()
        app_menu.addAction(self.quit_action)
        view_menu = self.menuBar().addMenu("&View")
        for i, title in enumerate(TAB_TITLES):
            action = view_menu.addAction(title)
            action.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
            action.triggered.connect(functools.partial(self.tabs.setCurrentIndex, i))
        self.desktop_actions.add_to_help(self.menuBar().addMenu("&Help"))
        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("main-toolbar")
        toolbar.addAction(self.settings_action)
        toolbar.addAction(self.pause_action)

    def _build_status_bar(self) -> None:
        self.api_label = QLabel()
        self.api_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.api_label.setAccessibleName("API address")
        self.errors_button = QToolButton()
        self.errors_button.setAccessibleName("Recent errors")
        self.errors_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.errors_menu = QMenu(self.errors_button)
        self.errors_menu.aboutToShow.connect(self._fill_errors_menu)
        self.errors_button.setMenu(self.errors_menu)
        self.errors_button.setVisible(False)
        bar = self.statusBar()
        bar.addPermanentWidget(self.errors_button)
        bar.addPermanentWidget(self.api_label)
        self._update_api_label()

    # ---- status bar and errors ---------------------------------------------------------

    def _update_api_label(self) -> None:
        urls = api_urls(self._bridge.controls.api_url())
        text = "API: " + " · ".join(urls)
        if self.api_label.text() != text:
            self.api_label.setText(text)
            self.api_label.setToolTip("\n".join(urls))

    def _on_sample(self, _sample: Any) -> None:
        self._update_api_label()

    def show_error(self, message: str) -> None:
        """Show ``message`` in the status bar for ~10 s and keep it in the error history."""
        self.errors.append((time.time(), message))
        self.statusBar().showMessage(message, ERROR_SHOWN_MS)
        self.errors_button.setText(f"⚠ {len(self.errors)}")
        self.errors_button.setToolTip("Recent errors (click to see them)")
        self.errors_button.setVisible(True)

    def _fill_errors_menu(self) -> None:
        self.errors_menu.clear()
        for at, message in reversed(self.errors):
            stamp = time.strftime("%H:%M:%S", time.localtime(at))
            self.errors_menu.addAction(f"{stamp}  {message}").setEnabled(False)
        self.errors_menu.addSeparator()
        self.errors_menu.addAction("Clear", self._clear_errors)

    def _clear_errors(self) -> None:
        self.errors.clear()
        self.errors_button.setVisible(False)

    # ---- actions -----------------------------------------------------------------------

    def _on_tab(self, _index: int) -> None:
        if self.tabs.currentWidget() is self.chat:
            self.chat.focus_composer()
        elif self.tabs.currentWidget() is self.models_view:
            self.models_view.refresh()

    def show_models(self) -> None:
        """Show the Models view (search, download, use on a pool)."""
        self.tabs.setCurrentWidget(self.models_view)

    def navigate(self, action: str) -> None:
        """Carry out a chat's error action: open Models, Settings, Pools or the logs."""
        if action == "open_models":
            self.show_models()
        elif action == "open_settings":
            self.open_settings()
        elif action == "open_pools":
            self.tabs.setCurrentWidget(self.pools_view)
        elif action == "open_logs":
            self.tabs.setCurrentWidget(self.tasks)

    def open_settings(self) -> SettingsDialog:
        """Open the settings dialog (window-modal, does not block) and return it."""
        if self.settings_dialog is not None and self.settings_dialog.isVisible():
            self.settings_dialog.raise_()
            return self.settings_dialog
        dialog = SettingsDialog(self._bridge, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.destroyed.connect(self._forget_settings_dialog)
        self.settings_dialog = dialog
        dialog.open()
        return dialog

    def _forget_settings_dialog(self) -> None:
        self.settings_dialog = None

    def running_tasks(self) -> int:
        """Return how many tasks are queued or running (from every client)."""
        return sum(1 for t in self._bridge.tasks(1000) if not t.state.terminal)

    def _may_quit(self) -> bool:
        n = self.running_tasks()
        if n == 0:
            return True
        return self._ask(
            self,
            "Quit llama-orch?",
            f"{n} task(s) are still queued or running and will be canceled. Quit anyway?",
        )

    def request_quit(self) -> None:
        """Quit after asking when tasks are running: saves geometry, emits quitRequested."""
        if not self._may_quit():
            return
        self._quitting = True
        self.save_geometry()
        self.tray.hide()
        self.quitRequested.emit()
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Hide to the tray when one exists; else quit, asking first if tasks run."""
        if self._quitting:
            event.accept()
            return
        self.save_geometry()
        if self.tray.active:
            event.ignore()
            self.hide()
            self._tell_about_tray()
            return
        if not self._may_quit():
            event.ignore()
            return
        self._quitting = True
        event.accept()
        self.quitRequested.emit()

    def _tell_about_tray(self) -> None:
        if not self._told_about_tray:
            self._told_about_tray = True
            self.tray.notify(
                "llama-orch keeps running", "The server still runs; use the tray icon to quit."
            )

    # ---- geometry -----------------------------------------------------------------------

    def _restore_geometry(self) -> None:
        geometry = self._settings.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1100, 760)
        state = self._settings.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        tab = str(self._settings.value("window/tab", 0))
        self.tabs.setCurrentIndex(int(tab) if tab.isdigit() else 0)

    def save_geometry(self) -> None:
        """Remember the window's geometry, toolbar state and tab in QSettings."""
        self._settings.setValue("window/geometry", self.saveGeometry())
        self._settings.setValue("window/state", self.saveState())
        self._settings.setValue("window/tab", self.tabs.currentIndex())
