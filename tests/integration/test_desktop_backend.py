"""The desktop app's backend thread, end to end through ``run_gui``: real config, core,
engines and API server on the backend's own loop; the window on the Qt thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PySide6.QtCore import QSettings

from app.config import load_settings
from app.gui_controls import GuiControls
from app.main import api_settings, build_backend
from app.orchestrator.contracts import TaskRequest
from app.ui.app import run_gui
from app.ui.bridge import BackendGone, Bridge
from app.ui.main_window import MainWindow
from tests.integration.support import free_port

Script = Callable[[Bridge, MainWindow, dict[str, Any]], Awaitable[None]]


def write_config(path: Path, body: str, top: str = "") -> Path:
    path.write_text(f'{top}[server]\nbind = "127.0.0.1:{free_port()}"\n{body}')
    return path


def run_desktop(
    tmp_path: Path, config: Path, script: Script, limit_s: float = 90, *, saves: bool = False
) -> dict[str, Any]:
    """Run the desktop app on ``config``; ``script`` drives the window, then it quits.
    Returns what the starter and the script recorded (``seen``)."""
    seen: dict[str, Any] = {}
    settings = load_settings(config, {})

    async def start() -> Any:
        backend = build_backend(settings)
        await backend.start()
        seen.update(loop=asyncio.get_running_loop(), backend=backend, url=backend.api.url)

        async def stop() -> None:
            await backend.stop(deadline_s=2.0)
            seen["stopped"] = True

        if saves:  # the app's own settings controls: they write ``config``
            controls: Any = GuiControls(backend, config, tmp_path / "app.log", api_settings)
        else:
            controls = _Controls(backend.api.url)
        return backend.orch, controls, stop

    def factory(bridge: Bridge, banner: str | None) -> MainWindow:
        ini = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
        window = MainWindow(bridge, banner=banner, tray_available=lambda: False, settings=ini)
        seen["errors"] = window.errors

        async def drive() -> None:
            try:
                await asyncio.wait_for(script(bridge, window, seen), limit_s)
            except BaseException as exc:
                seen["script_error"] = exc
            finally:
                window.request_quit()

        seen["driver"] = asyncio.ensure_future(drive())
        return window

    seen["code"] = run_gui(start, window_factory=factory)
    return seen


class _Controls:
    def __init__(self, url: str) -> None:
        self.url = url

    def api_url(self) -> str:
        return self.url

    def config_path(self) -> str:
        return ""

    def log_path(self) -> str:
        return ""

    def current_settings(self) -> Any:
        return None

    async def apply_settings(self, settings: Any) -> None:
        raise ValueError("not in this test")


async def until(pred: Callable[[], Any], within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def lan_stream(url: str, max_tokens: int) -> list[str]:
    """Submit and stream one task as a LAN client does; return the event names."""
    async with aiohttp.ClientSession() as http:
        body = {"prompt": "hello", "max_tokens": max_tokens, "seed": 1}
        async with http.post(f"{url}/v1/tasks", json=body) as resp:
            assert resp.status == 202, await resp.text()
            task_id = (await resp.json())["task_id"]
        kinds: list[str] = []
        async with http.get(f"{url}/v1/tasks/{task_id}/stream") as resp:
            async for raw in resp.content:
                if raw.startswith(b"event: "):
                    kinds.append(raw[7:].decode().strip())
                elif raw.startswith(b"data: ") and kinds[-1] == "end":
                    json.loads(raw[6:])
    return kinds


def backend_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llama-orch-backend"]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.engine
def test_quit_stops_the_backend_thread_and_every_engine(
    qapp: Any, tmp_path: Path, demo_model: Path
) -> None:
    config = write_config(
        tmp_path / "c.toml",
        '[[pools]]\nid = "demo"\nengine = "llamacpp"\n'
        f'model = "file:{demo_model}"\ndevice_mask = "cpu"\nctx = 512\n',
        top="allow_cpu_inference = true\n",
    )

    async def script(bridge: Bridge, window: MainWindow, seen: dict[str, Any]) -> None:
        await until(lambda: any(p.ready for p in bridge.pools()), 90)
        seen["pids"] = [e.engine_pid for e in seen["backend"].engines]
        seen["kinds"] = await lan_stream(seen["url"], 8)  # the window renders meanwhile
        window.grab()
        # the window learns that the task ended one coalesced delivery after the client:
        # quitting before that would rightly ask "Quit llama-orch?" first
        await until(lambda: window.running_tasks() == 0, 10)

    seen = run_desktop(tmp_path, config, script, limit_s=110)
    assert seen.get("script_error") is None, repr(seen.get("script_error"))
    assert seen["code"] == 0
    assert seen["kinds"][0] == "started" and seen["kinds"][-1] == "end"
    assert seen["kinds"].count("token") == 8
    [pid] = seen["pids"]
    assert pid and not alive(pid), "the engine outlived the app"
    assert seen["stopped"] and seen["loop"].is_closed()
    assert backend_threads() == []


MOCK_POOL = '[[pools]]\nid = "m0"\nengine = "mock"\nmodel = "m"\nmock_tokens_per_s = 500\n'


def test_a_backend_crash_shows_in_the_window_and_commands_fail_fast(
    qapp: Any, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.toml", MOCK_POOL)

    def fatal() -> None:
        raise SystemExit("the backend hit a fatal error")

    async def script(bridge: Bridge, window: MainWindow, seen: dict[str, Any]) -> None:
        await until(lambda: any(p.ready for p in bridge.pools()), 30)
        seen["loop"].call_soon_threadsafe(fatal)
        await until(lambda: window.errors, 10)
        started = time.monotonic()
        try:
            await bridge.submit(TaskRequest(prompt="hi", max_tokens=4))
        except BackendGone as exc:
            seen["refused"] = str(exc)
        seen["refused_after_s"] = time.monotonic() - started

    seen = run_desktop(tmp_path, config, script)
    assert seen.get("script_error") is None, repr(seen.get("script_error"))
    messages = [m for _at, m in seen["errors"]]
    assert any("The backend stopped unexpectedly" in m for m in messages), messages
    assert any("fatal error" in m for m in messages)
    assert "stopped unexpectedly" in seen["refused"]
    assert seen["refused_after_s"] < 5
    assert seen["stopped"], "the engines were not stopped after the crash"
    assert seen["code"] == 0
    assert backend_threads() == []


def test_an_error_in_a_backend_task_reaches_the_status_bar(qapp: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", MOCK_POOL)

    async def script(bridge: Bridge, window: MainWindow, seen: dict[str, Any]) -> None:
        await until(lambda: any(p.ready for p in bridge.pools()), 30)
        seen["loop"].call_soon_threadsafe(lambda: 1 / 0)
        await until(lambda: window.errors, 10)
        seen["status"] = window.statusBar().currentMessage()
        await asyncio.wait_for(bridge.drain_all(), 5)  # the backend still serves
        seen["draining"] = await asyncio.wait_for(_until_draining(bridge), 5)

    seen = run_desktop(tmp_path, config, script)
    assert seen.get("script_error") is None, repr(seen.get("script_error"))
    assert "division by zero" in seen["status"]
    assert seen["draining"]
    assert seen["code"] == 0 and seen["stopped"]


@pytest.fixture
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.engine_host.demo_model import write_demo_model

    return write_demo_model(tmp_path_factory.mktemp("models") / "demo.gguf")


async def _until_draining(bridge: Bridge) -> bool:
    await until(lambda: all(p.draining for p in bridge.pools()), 5)
    return True


def test_the_backend_loop_is_asyncio_unless_uvloop_is_asked_for() -> None:
    from app.main import backend_loop_factory

    assert backend_loop_factory({}) is asyncio.new_event_loop
    assert backend_loop_factory({"LLAMA_ORCH_LOOP": "asyncio"}) is asyncio.new_event_loop
    uvloop = pytest.importorskip("uvloop")
    assert backend_loop_factory({"LLAMA_ORCH_LOOP": "uvloop"}) is uvloop.new_event_loop


@pytest.mark.engine
def test_changed_engine_settings_apply_by_atomic_reload_and_are_saved(
    qapp: Any, tmp_path: Path, demo_model: Path
) -> None:
    config = write_config(
        tmp_path / "c.toml",
        '[[pools]]\nid = "demo"\nengine = "llamacpp"\n'
        f'model = "file:{demo_model}"\ndevice_mask = "cpu"\nctx = 512\n',
        top="allow_cpu_inference = true\n",
    )

    async def script(bridge: Bridge, window: MainWindow, seen: dict[str, Any]) -> None:
        await until(lambda: any(p.ready for p in bridge.pools()), 90)
        engine = seen["backend"].engines[0]
        seen["pids"] = [engine.engine_pid]
        settings = bridge.controls.current_settings()
        (pool,) = settings.pools
        tuned = pool.model_copy(update={"slots": 2, "extra_args": ["--threads", "1"]})
        await bridge.controls.apply_settings(settings.model_copy(update={"pools": [tuned]}))
        seen["pids"].append(engine.engine_pid)
        seen["slots"] = [p.slots_total for p in bridge.pools()]
        bad = tuned.model_copy(update={"extra_args": ["--no-such-flag"]})
        try:
            await bridge.controls.apply_settings(settings.model_copy(update={"pools": [bad]}))
        except ValueError as exc:
            seen["refused"] = str(exc)
        seen["pids"].append(engine.engine_pid)

    seen = run_desktop(tmp_path, config, script, limit_s=110, saves=True)
    assert seen.get("script_error") is None, repr(seen.get("script_error"))
    first, tuned, after_bad = seen["pids"]
    assert tuned not in (None, first) and after_bad == tuned
    assert seen["slots"] == [2]
    assert "keeps serving" in seen["refused"]
    saved = config.read_text()
    assert 'extra_args = ["--threads", "1"]' in saved and "slots = 2" in saved
