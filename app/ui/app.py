"""GUI entry: one qasync loop for Qt and asyncio, the window, and an orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any

import qasync
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.orchestrator.service import Orchestrator
from app.ui.bridge import AppControls, OrchestratorBridge
from app.ui.chat_store import ChatStore
from app.ui.chat_store import default_path as default_chat_path
from app.ui.icons import app_icon
from app.ui.main_window import MainWindow
from app.ui.start_error import report_start_error

log = logging.getLogger("llama_orch.ui")

BackendStop = Callable[[], Awaitable[None]]
Starter = Callable[[], Awaitable[tuple[Orchestrator, AppControls, BackendStop]]]
ErrorShower = Callable[[str], None]

APP_NAME = "llama-orch"


def show_start_error(message: str) -> None:
    """Show why the app could not start on stderr and in a modal message box (blocks
    until closed)."""
    report_start_error(message)


def run_gui(
    start: Starter,
    *,
    banner: str | None = None,
    show_error: ErrorShower = show_start_error,
    window_factory: Callable[[OrchestratorBridge, str | None], MainWindow] | None = None,
    minimized: bool = False,
) -> int:
    """Run the desktop app until the user quits; return the process exit code.

    Awaits ``start()`` on the shared qasync loop (it builds the core, engines and
    API server), shows the window (only the tray icon when ``minimized`` and a tray
    exists), and after quit awaits the returned stop
    function. Returns 1 when ``start()`` raises (its message is shown with
    ``show_error``), else 0. Blocks for the whole session.
    """
    app = _application()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    try:
        try:
            orch, controls, stop = loop.run_until_complete(start())
        except Exception as exc:
            log.exception("the backend failed to start")
            show_error(str(exc) or type(exc).__name__)
            return 1
        bridge = OrchestratorBridge(orch, controls)
        window = (window_factory or _default_window)(bridge, banner)
        _run_session(app, loop, bridge, window, stop, show=not (minimized and window.tray.active))
        return 0
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


def _application() -> QApplication:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv)
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setDesktopFileName(APP_NAME)
    app.setWindowIcon(app_icon())
    # Quitting is decided by the window (tray or not): a Qt-level quit would stop
    # the shared loop before the backend is shut down.
    app.setQuitOnLastWindowClosed(False)
    return app


def _default_window(bridge: OrchestratorBridge, banner: str | None) -> MainWindow:
    return MainWindow(bridge, banner=banner, chat_store=open_chat_store(bridge))


def open_chat_store(bridge: OrchestratorBridge) -> ChatStore:
    """Open the saved chats in the XDG data dir; when that fails, keep chats in memory
    for this session and say so. Blocks briefly (opens a file)."""
    path = default_chat_path()
    try:
        return ChatStore(path)
    except (OSError, sqlite3.Error) as exc:
        bridge.report_error(
            f"Chats cannot be saved: {path} could not be opened ({exc}). "
            "They are kept until the app quits."
        )
        return ChatStore(":memory:")


def _run_session(
    app: QApplication,
    loop: asyncio.AbstractEventLoop,
    bridge: OrchestratorBridge,
    window: MainWindow,
    stop: BackendStop,
    *,
    show: bool = True,
) -> None:
    restore = install_error_handlers(loop, bridge)
    try:
        _serve_until_quit(app, loop, window, show=show)
    finally:
        window.save_geometry()
        window.tray.hide()
        window.hide()
        bridge.close()
        restore()
        loop.run_until_complete(stop())


def _serve_until_quit(
    app: QApplication, loop: asyncio.AbstractEventLoop, win: MainWindow, *, show: bool = True
) -> None:
    done: asyncio.Future[None] = loop.create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    win.quitRequested.connect(finish)
    app.aboutToQuit.connect(finish)
    if show:
        win.show()
    with _signals_quit(loop, finish), contextlib.suppress(RuntimeError):
        # RuntimeError: Qt itself quit (e.g. the desktop session ended) and stopped the loop.
        loop.run_until_complete(done)


@contextlib.contextmanager
def _signals_quit(loop: asyncio.AbstractEventLoop, finish: Callable[[], None]) -> Iterator[None]:
    """Make Ctrl+C in the terminal and SIGTERM (logout, ``kill``) quit cleanly, so
    engines are stopped and live streams closed; a timer lets Python see the signal."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(finish))
    ticker = QTimer()
    ticker.timeout.connect(lambda: None)
    ticker.start(250)
    try:
        yield
    finally:
        ticker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def install_error_handlers(
    loop: asyncio.AbstractEventLoop, bridge: OrchestratorBridge
) -> Callable[[], None]:
    """Route uncaught exceptions (Qt slots, async slots, loop callbacks) to the log and
    the bridge's ``errorRaised`` (status bar). Returns a function that restores the
    previous handlers."""
    previous_hook = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            previous_hook(kind, exc, tb)
            return
        log.error("unhandled exception: %s", exc, exc_info=(kind, exc, tb))
        bridge.errorRaised.emit(f"{kind.__name__}: {exc}")

    def on_loop_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message") or "error in the event loop")
        log.error("event loop: %s", message, exc_info=exc)
        bridge.errorRaised.emit(f"{message}: {exc}" if exc else message)

    sys.excepthook = hook
    loop.set_exception_handler(on_loop_error)

    def restore() -> None:
        sys.excepthook = previous_hook
        loop.set_exception_handler(None)

    return restore
