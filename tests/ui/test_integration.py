"""The window on a real qasync loop; the real Orchestrator, mock pool and API server on the
backend's own thread and loop, reached through the EmbeddedBridge."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PySide6.QtCore import QObject, QSettings, QTimer
from qasync import asyncSlot

from app.api.server import ApiServer
from app.api.settings import ApiSettings
from app.engine_host.mock import MockEngine, MockSpec
from app.orchestrator.service import Orchestrator
from app.ui.app import install_error_handlers, run_gui
from app.ui.backend_thread import BackendThread
from app.ui.bridge import Bridge
from app.ui.chat_panel import ChatPanel
from app.ui.embedded_bridge import EmbeddedBridge
from app.ui.main_window import MainWindow
from app.ui.tasks_view import TasksView
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge, FakeControls

TOKENS = 100  # at 200 tokens/s each answer streams for ~0.5 s


class UrlControls(FakeControls):
    """FakeControls that report the real server's URL."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def api_url(self) -> str:
        return self.url


class Backend:
    """A started orchestrator over one mock pool (2 slots) and its API server."""

    def __init__(self, orch: Orchestrator, server: ApiServer) -> None:
        self.orch = orch
        self.server = server

    @classmethod
    async def start(cls) -> Backend:
        engine = MockEngine(MockSpec("mock0", tokens_per_s=200, slots=2))
        orch = Orchestrator([engine])
        await orch.start()
        server = ApiServer(orch, ApiSettings(bind_port=0))
        await server.start()
        return cls(orch, server)

    async def stop(self) -> None:
        await self.server.stop()
        await self.orch.shutdown(deadline_s=1.0)


async def start_backend() -> tuple[Backend, Any]:
    b = await Backend.start()
    return b, b.stop


@pytest.fixture
def threaded(qloop: QtAsync) -> Iterator[tuple[Backend, BackendThread[Backend]]]:
    """A started Backend on its own thread (stopped, thread joined, at teardown)."""
    thread = BackendThread(start_backend)
    b = thread.start(timeout=30)
    yield b, thread
    thread.stop(timeout=20)
    assert not thread.serving


async def lan_client(url: str) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """Submit and stream one task the way a LAN client does; return its id and events."""
    body = {"prompt": "hello from the LAN", "max_tokens": TOKENS, "priority": "batch"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/tasks", json=body) as resp:
            assert resp.status == 202, await resp.text()
            task_id = (await resp.json())["task_id"]
        events: list[tuple[str, dict[str, Any]]] = []
        async with http.get(f"{url}/v1/tasks/{task_id}/stream") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            kind = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
    return task_id, events


def test_gui_chat_and_a_lan_client_stream_at_the_same_time(
    qtbot: Any, qloop: QtAsync, threaded: tuple[Backend, BackendThread[Backend]]
) -> None:
    backend, thread = threaded
    bridge = EmbeddedBridge(
        backend.orch, UrlControls(backend.server.url), thread, sample_interval_s=0.1
    )
    qloop.wait_until(lambda: all(p.ready for p in bridge.pools()))
    panel = ChatPanel(bridge)
    tasks = TasksView(bridge)
    qtbot.addWidget(panel)
    qtbot.addWidget(tasks)
    panel.show()
    tasks.show()
    conv = panel.current()
    conv.max_tokens.setValue(TOKENS)
    conv.prompt.setPlainText("hello from the window")

    async def click_send() -> None:  # Qt delivers clicks inside the running loop
        conv.send_button.click()

    qloop.run(click_send())
    qloop.wait_until(lambda: conv.task_id is not None)  # the submit crossed to the backend
    qloop.sleep(0.01)  # let the loop take the first step of the stream task
    gui_task = conv.task_id
    assert gui_task is not None

    overlap: list[bool] = []

    def watch() -> None:  # sampled while both run: the GUI answer is still streaming
        panel.grab()  # the window renders while the backend serves the LAN client
        overlap.append(
            conv.busy
            and any(t.state == "streaming" and t.identity != "gui" for t in bridge.tasks())
        )

    timer = QTimer()
    timer.timeout.connect(watch)
    timer.start(20)
    lan_task, events = qloop.run(lan_client(backend.server.url), timeout=20)
    qloop.wait_until(lambda: not conv.busy, timeout=20)
    timer.stop()

    assert any(overlap), "the GUI and LAN streams never ran at the same time"
    kinds = [k for k, _ in events]
    assert kinds[0] == "started" and kinds[-1] == "end"
    assert kinds.count("token") == TOKENS
    assert "".join(d["t"] for k, d in events if k == "token")
    answer = conv.history[-1]
    assert answer.role == "assistant" and answer.content
    assert answer.content in conv.transcript.toPlainText()
    assert conv.status.text() == "Done."
    assert f"{TOKENS} tokens · length" in conv.last_stats
    assert conv.transcript.flushes < TOKENS / 3

    qloop.wait_until(lambda: sum(t.state == "done" for t in bridge.tasks()) == 2, timeout=5)
    views = {t.task_id: t for t in bridge.tasks()}
    assert views[gui_task].state == views[lan_task].state == "done"
    assert views[gui_task].identity == "gui" and views[lan_task].identity != "gui"
    qloop.wait_until(lambda: {gui_task, lan_task} <= set(tasks.model.task_ids()), timeout=5)
    bridge.close()


# ---------------------------------------------------------------- app entry


def window_factory(tmp_path: Path, quit_after_ms: int) -> Any:
    """Build the window; quit it after ``quit_after_ms``. ``factory.seen`` records
    the banner and API texts just before the quit (run_gui destroys the window)."""
    built: list[MainWindow] = []
    seen: dict[str, str] = {}

    def factory(bridge: Bridge, banner: str | None) -> MainWindow:
        window = MainWindow(
            bridge,
            banner=banner,
            tray_available=lambda: False,
            settings=QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat),
        )
        built.append(window)

        def quit_now() -> None:
            seen["banner"] = window.banner.label.text() if window.banner is not None else ""
            seen["api"] = window.api_label.text()
            window.request_quit()

        QTimer.singleShot(quit_after_ms, quit_now)
        return window

    factory.built = built  # type: ignore[attr-defined]
    factory.seen = seen  # type: ignore[attr-defined]
    return factory


def test_run_gui_serves_until_quit_then_stops_the_backend(qapp: Any, tmp_path: Path) -> None:
    stopped: list[bool] = []
    seen: dict[str, Any] = {}

    async def start() -> Any:
        backend = await Backend.start()
        seen["loop"] = asyncio.get_running_loop()

        async def stop() -> None:
            await backend.stop()
            stopped.append(True)

        return backend.orch, UrlControls(backend.server.url), stop

    factory = window_factory(tmp_path, quit_after_ms=300)
    code = run_gui(start, banner="You're running the demo model.", window_factory=factory)
    assert code == 0
    assert stopped == [True]
    assert len(factory.built) == 1
    assert factory.seen["banner"].startswith("You're running")
    assert factory.seen["api"].startswith("API: http://127.0.0.1:")
    assert QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat).contains(
        "window/geometry"
    )
    assert seen["loop"].is_closed()


def test_run_gui_reports_a_start_failure_and_returns_1(qapp: Any) -> None:
    shown: list[str] = []

    async def start() -> Any:
        raise OSError("cannot listen on 127.0.0.1:8080: the address is already in use")

    assert run_gui(start, show_error=shown.append) == 1
    assert shown == ["cannot listen on 127.0.0.1:8080: the address is already in use"]


class Raiser(QObject):
    @asyncSlot()  # type: ignore[untyped-decorator]
    async def boom(self) -> None:
        raise RuntimeError("slot exploded")


def test_errors_from_async_slots_and_loop_callbacks_reach_the_bridge(qloop: QtAsync) -> None:
    bridge = FakeBridge()
    before = sys.excepthook
    restore = install_error_handlers(qloop.loop, bridge)
    try:
        Raiser().boom()
        qloop.wait_until(lambda: bridge.errors)
        qloop.loop.call_soon(lambda: 1 / 0)
        qloop.wait_until(lambda: len(bridge.errors) == 2)
    finally:
        restore()
    assert bridge.errors[0] == "RuntimeError: slot exploded"
    assert "ZeroDivisionError" in bridge.errors[1] or "division by zero" in bridge.errors[1]
    assert sys.excepthook is before
