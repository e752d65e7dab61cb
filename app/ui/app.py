"""GUI entry: the backend on its own thread, qasync for the window, an orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any

import qasync
from PySide6.QtCore import QCoreApplication, QEvent, QTimer
from PySide6.QtWidgets import QApplication

from app.orchestrator.service import Orchestrator
from app.ui.backend_thread import BackendThread
from app.ui.bridge import AppControls, Bridge
from app.ui.chat_store import ChatStore
from app.ui.chat_store import default_path as default_chat_path
from app.ui.embedded_bridge import EmbeddedBridge
from app.ui.icons import app_icon
from app.ui.main_window import MainWindow
from app.ui.start_error import report_start_error

log = logging.getLogger("llama_orch.ui")

BackendStop = Callable[[], Awaitable[None]]
Starter = Callable[[], Awaitable[tuple[Orchestrator, AppControls, BackendStop]]]
ErrorShower = Callable[[str], None]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

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
    window_factory: Callable[[Bridge, str | None], MainWindow] | None = None,
    minimized: bool = False,
    backend_loop: LoopFactory = asyncio.new_event_loop,
    on_repeat_signal: Callable[[], None] | None = None,
) -> int:
    """Run the desktop app until the user quits; return the process exit code.

    Runs ``start()`` on the backend's own thread and loop (made by
    ``backend_loop``; it builds the core, engines and API server), shows the
    window on this thread's qasync loop (only the tray icon when ``minimized``
    and a tray exists), and after quit runs the returned stop function on the
    backend loop and ends that thread. A second SIGINT/SIGTERM calls
    ``on_repeat_signal`` (from the main thread, e.g. to hurry the stop). Returns
    1 when ``start()`` raises (its message is shown with ``show_error``), else 0.
    Blocks for the whole session.
    """
    app = _application()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    collector = QtThreadGc()
    backend: BackendThread[tuple[Orchestrator, AppControls]] = BackendThread(
        _split(start), loop_factory=backend_loop
    )
    done: asyncio.Future[None] = loop.create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    try:
        # SIGTERM/Ctrl+C quit cleanly from here on: the API serves before the window shows.
        with _signals_quit(loop, finish, on_repeat_signal, quitting=done.done):
            try:
                orch, controls = backend.start()
            except Exception as exc:
                log.exception("the backend failed to start")
                show_error(str(exc) or type(exc).__name__)
                return 1
            window: MainWindow | None = None
            try:
                bridge = EmbeddedBridge(orch, controls, backend)
                window = (window_factory or _default_window)(bridge, banner)
                show = not (minimized and window.tray.active)
                _run_session(app, loop, bridge, window, done, show=show)
            finally:
                backend.stop()
                if window is not None:
                    _dispose(window)
        return 0
    finally:
        collector.stop()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


Attach = Callable[[], Awaitable[Bridge]]
Detach = Callable[[Bridge], Awaitable[None]]


def run_window(
    attach: Attach,
    detach: Detach,
    *,
    show_error: ErrorShower = show_start_error,
    window_factory: Callable[[Bridge, str | None], MainWindow] | None = None,
    minimized: bool = False,
    on_window: Callable[[MainWindow, Bridge], None] | None = None,
) -> int:
    """Run the window against a backend that runs elsewhere (``gui --connect``).

    Awaits ``attach()`` on this thread's qasync loop for the bridge, shows the
    window (``on_window`` may wire it further), and after quit awaits
    ``detach(bridge)``. Returns 1 when ``attach()`` raises (its message is shown
    with ``show_error``), else 0. Blocks for the whole session.
    """
    app = _application()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    done: asyncio.Future[None] = loop.create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    try:
        with _signals_quit(loop, finish):
            try:
                bridge = loop.run_until_complete(attach())
            except Exception as exc:
                show_error(str(exc) or type(exc).__name__)
                return 1
            try:
                window = (window_factory or _default_window)(bridge, None)
                if on_window is not None:
                    on_window(window, bridge)
                show = not (minimized and window.tray.active)
                _run_session(app, loop, bridge, window, done, show=show)
            finally:
                loop.run_until_complete(detach(bridge))
        return 0
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


class QtThreadGc:
    """Runs Python's cyclic garbage collector on the Qt thread only, until ``stop``.

    With the backend on another thread, an automatic collection could run there
    and destroy Qt objects caught in garbage cycles on the wrong thread (a crash).
    So automatic collection is switched off and a timer on the Qt thread collects
    the generations whose thresholds were passed, as often as Python would.
    """

    def __init__(self, interval_ms: int = 250) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer = QTimer()
        self._timer.timeout.connect(self.collect)
        self._timer.start(interval_ms)

    def collect(self) -> None:
        """Collect the generations due now (blocks for the collection)."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        due = [g for g in range(3) if counts[g] > thresholds[g]]
        if due:
            gc.collect(max(due))

    def stop(self) -> None:
        """Stop the timer and give collection back to Python."""
        self._timer.stop()
        if self._was_enabled:
            gc.enable()


def _dispose(window: MainWindow) -> None:
    """Destroy the window and its widgets now, on this thread, while their Python
    wrappers are all alive. Left to a later deferred delete (after collections have
    freed some wrappers) the charts' graphics scenes crash on destruction."""
    window.hide()  # not close(): the session is over, closeEvent must not ask again
    window.tray.hide()
    window.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def _split(
    start: Starter,
) -> Callable[[], Awaitable[tuple[tuple[Orchestrator, AppControls], BackendStop]]]:
    async def started() -> tuple[tuple[Orchestrator, AppControls], BackendStop]:
        orch, controls, stop = await start()
        return (orch, controls), stop

    return started


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


def _default_window(bridge: Bridge, banner: str | None) -> MainWindow:
    return MainWindow(bridge, banner=banner, chat_store=open_chat_store(bridge))


def open_chat_store(bridge: Bridge) -> ChatStore:
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
    bridge: Bridge,
    window: MainWindow,
    done: asyncio.Future[None],
    *,
    show: bool = True,
) -> None:
    restore = install_error_handlers(loop, bridge)
    try:
        _serve_until_quit(app, loop, window, done, show=show)
    finally:
        window.save_geometry()
        window.tray.hide()
        window.hide()
        bridge.close()
        restore()


def _serve_until_quit(
    app: QApplication,
    loop: asyncio.AbstractEventLoop,
    win: MainWindow,
    done: asyncio.Future[None],
    *,
    show: bool = True,
) -> None:
    def finish() -> None:
        if not done.done():
            done.set_result(None)

    win.quitRequested.connect(finish)
    app.aboutToQuit.connect(finish)
    if show:
        win.show()
    with contextlib.suppress(RuntimeError):
        # RuntimeError: Qt itself quit (e.g. the desktop session ended) and stopped the loop.
        loop.run_until_complete(done)


@contextlib.contextmanager
def _signals_quit(
    loop: asyncio.AbstractEventLoop,
    finish: Callable[[], None],
    on_repeat: Callable[[], None] | None = None,
    quitting: Callable[[], bool] = lambda: False,
) -> Iterator[None]:
    """Make Ctrl+C in the terminal and SIGTERM (logout, ``kill``) quit cleanly, so
    engines are stopped and live streams closed; a timer lets Python see the signal.
    A signal that comes once quitting has begun (a second one, or the first after
    the window's Quit) calls ``on_repeat`` (to hurry the stop). The handlers run on
    this (the main) thread, the only one Python lets install them."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    asked = [False]

    def handler(_sig: int, _frame: object) -> None:
        if not (asked[0] or quitting()):
            asked[0] = True
            loop.call_soon_threadsafe(finish)
        elif on_repeat is not None:
            on_repeat()

    for sig in signals:
        signal.signal(sig, handler)
    ticker = QTimer()
    ticker.timeout.connect(lambda: None)
    ticker.start(250)
    try:
        yield
    finally:
        ticker.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)


def install_error_handlers(loop: asyncio.AbstractEventLoop, bridge: Bridge) -> Callable[[], None]:
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
