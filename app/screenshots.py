"""Render every view of the desktop app to PNG files, using the real stack.

``python -m app.screenshots OUT_DIR`` (``make screenshots``) writes a
throwaway config (the demo llama.cpp pool plus two mock pools, one of them
draining so placement decisions show a filter), starts the real
engines, core and API server on one qasync loop, streams prompts from the chat
panel and from HTTP clients on the real API for a while, then grabs each tab of the main
window and the settings dialog into ``OUT_DIR/*.png``. Without a display it
renders offscreen. Like ``app.main`` it is a composition root: it wires the
backend, so it may use ``app.main``'s builders.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.orchestrator.lifecycle import PoolState, TaskState

HISTORY_S = 45.0  # traffic before the grabs, so the charts have some history
READY_TIMEOUT_S = 180.0
TABS = {"pools": 0, "chat": 1, "decisions": 2, "metrics": 3, "tasks": 4}
CHAT_PROMPT = "Which GPU in my home lab should run a 7B model, and why?"
_ENV_OVERRIDES = ("BIND_ADDR", "ORCHD_ADDR", "AUTH_TOKEN", "AUTH_OPTIONAL", "TRUST_PROXY_AUTH")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_settings(folder: Path, env: dict[str, str]) -> Any:
    """Write the demo config (demo llama.cpp pool + two mock pools) under ``folder`` and
    return the loaded Settings. Raises ConfigError or OSError. BLOCKING."""
    from app.config import PoolSettings, load_settings, save_settings
    from app.main import load_or_create_settings

    path = folder / "config.toml"
    base, _ = load_or_create_settings(path, env)
    mocks = [
        PoolSettings(id=f"mock{i}", engine="mock", model="mock-chat", device_mask=str(i),
                     slots=2, mock_tokens_per_s=60.0, mock_first_token_ms=120)
        for i in (0, 1)
    ]  # fmt: skip
    server = base.server.model_copy(update={"bind": f"127.0.0.1:{_free_port()}"})
    engines = base.engines.model_copy(update={"log_dir": str(folder / "logs")})
    update = {"pools": [*base.pools, *mocks], "server": server, "engines": engines}
    save_settings(base.model_copy(update=update), path)
    return load_settings(path, env)


async def _until(pred: Callable[[], bool], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {limit_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def _settled(bridge: Any) -> bool:
    return all(
        p.state in (PoolState.READY, PoolState.NEEDS_MODEL, PoolState.FAILED)
        for p in bridge.pools()
    )


class Traffic:
    """Clients on the real HTTP API (OrchQueue SSE and the OpenAI-compatible
    routes) submitting and streaming tasks next to the chat panel."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.streams: set[asyncio.Task[None]] = set()
        self.count = 0
        self._http: Any = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def submit(self, prompt: str, *, cancel_after: float | None = None, **body: Any) -> None:
        """Send one task over HTTP and stream it in the background."""
        self.count += 1
        body = {"seed": self.count, **body}
        if self.count % 3 == 0 and "placement" not in body:
            coro = self._openai(prompt, body)
        else:
            coro = self._orchqueue({"prompt": prompt, **body}, cancel_after)
        task = asyncio.ensure_future(coro)
        self.streams.add(task)
        task.add_done_callback(self.streams.discard)

    def _session(self) -> Any:
        import aiohttp

        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._http

    async def _orchqueue(self, body: dict[str, Any], cancel_after: float | None) -> None:
        http = self._session()
        async with http.post(f"{self.base}/v1/tasks", json=body) as resp:
            if resp.status != 202:  # refusals are part of the picture
                return
            task_id = (await resp.json())["task_id"]
        if cancel_after is not None:
            asyncio.get_running_loop().call_later(
                cancel_after, lambda: asyncio.ensure_future(self._cancel(task_id))
            )
        async with http.get(f"{self.base}/v1/tasks/{task_id}/stream") as resp:
            async for _line in resp.content:
                pass

    async def _openai(self, prompt: str, body: dict[str, Any]) -> None:
        payload = {
            "model": "demo",
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "max_tokens": body.get("max_tokens", 48),
            "seed": body["seed"],
        }
        async with self._session().post(f"{self.base}/v1/chat/completions", json=payload) as resp:
            async for _line in resp.content:
                pass

    async def _cancel(self, task_id: str) -> None:
        with contextlib.suppress(Exception):
            async with self._session().post(f"{self.base}/v1/tasks/{task_id}/cancel"):
                pass

    def burst(self, n: int, *, max_tokens: int) -> None:
        """Submit ``n`` tasks at once, alternating priorities; every 7th is canceled."""
        for _ in range(n):
            self.submit(
                f"Background job {self.count}: describe a llama.",
                max_tokens=max_tokens,
                priority="batch" if self.count % 2 == 0 else "interactive",
                cancel_after=0.8 if self.count % 7 == 0 else None,
            )

    async def run(self, seconds: float) -> None:
        """Keep a trickle of tasks going for ``seconds``, then wait for them to end."""
        pin = {"mode": "pin", "pin_pool_id": "mock0"}
        nowhere = {"mode": "pin", "pin_pool_id": "gpu9", "allow_fallback": False}
        self.submit("Summarise the queue policy.", max_tokens=48, placement=pin)
        self.submit("List three uses of a GPU.", max_tokens=48, placement={"avoid_pools": ["demo"]})
        self.submit("This pool does not exist.", max_tokens=16, placement=nowhere)
        self.submit("Read this whole book: " + "once upon a time " * 3000, max_tokens=48)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.burst(3, max_tokens=48)  # bursts, so queues form
            await asyncio.sleep(2.5)
        await _until(lambda: not self.streams, 120.0, "the HTTP streams to finish")


async def _chat(window: Any) -> Any:
    conversation = window.chat.new_conversation()
    conversation.max_tokens.setValue(120)
    conversation.seed.setText("7")
    conversation.prompt.setPlainText(CHAT_PROMPT)
    conversation.send()
    return conversation


def _pick_decision(bridge: Any) -> str | None:
    records = [r for r in bridge.decisions(200) if r.selected_pool_id]
    if not records:
        return None
    best = max(records, key=lambda r: (len({c.outcome for c in r.candidates}), r.at))
    return str(best.task_id)


async def _grab_tab(window: Any, bridge: Any, out: Path, name: str) -> Path:
    """Switch to tab ``name``, prepare it, let it repaint, and save its PNG."""
    window.tabs.setCurrentIndex(TABS[name])
    if name == "decisions" and (task_id := _pick_decision(bridge)):
        window.decisions.select_task(task_id)
    if name == "metrics":
        window.metrics.set_window_minutes(5)
    if name == "tasks":
        window.tasks.flush()
        done = [t for t in bridge.tasks(50) if t.identity != "gui" and t.state is TaskState.DONE]
        if done:
            window.tasks.select_task(done[0].task_id)
    await asyncio.sleep(1.6 if name == "tasks" else 0.4)  # the log tail polls at 1 Hz
    path = out / f"{name}.png"
    window.grab().save(str(path))
    return path


async def _grab_settings(window: Any, out: Path) -> Path:
    dialog = window.open_settings()
    dialog.lan_switch.setChecked(True)
    await _until(lambda: dialog.new_token is not None, 10.0, "the new token")
    await asyncio.sleep(0.3)
    path = out / "settings.png"
    dialog.grab().save(str(path))
    dialog.reject()
    return path


async def _grab_refusals(window: Any, bridge: Any, out: Path) -> Path:
    """Show only the refused decisions, select the newest, and save decisions-refused.png."""
    window.tabs.setCurrentIndex(TABS["decisions"])
    view = window.decisions
    view.set_outcome_filter("refused")
    refused = [r for r in bridge.decisions(200) if r.outcome == "refused"]
    if refused:
        view.select_task(refused[0].task_id)
    await asyncio.sleep(0.4)
    path = out / "decisions-refused.png"
    window.grab().save(str(path))
    view.set_outcome_filter("all")
    return path


def _window(bridge: Any, folder: Path) -> tuple[Any, Any]:
    """Return the shown main window (first-start banner, seeded chats) and the
    markdown chat of the seeded store."""
    from PySide6.QtCore import QSettings

    from app.main import FIRST_START_BANNER
    from app.screenshots_chat import seeded_store
    from app.ui.main_window import MainWindow

    ini = QSettings(str(folder / "window.ini"), QSettings.Format.IniFormat)
    store, markdown_chat = seeded_store(folder)
    window = MainWindow(
        bridge, banner=FIRST_START_BANNER, tray_available=lambda: False, settings=ini,
        chat_store=store,
    )  # fmt: skip
    window.resize(1280, 860)
    window.show()
    return window, markdown_chat


async def render(out: Path, folder: Path) -> list[Path]:
    """Run the demo stack in ``folder``, drive it, and write the PNGs into ``out``.

    Returns the written paths. Raises TimeoutError when the pools never settle.
    """
    from app.gui_controls import GuiControls
    from app.logs import setup_logging
    from app.main import api_settings, build_backend
    from app.screenshots_chat import chat_scenes
    from app.screenshots_models import grab_models, start_hub
    from app.ui.backend_thread import BackendThread
    from app.ui.embedded_bridge import EmbeddedBridge

    os.environ["XDG_DATA_HOME"] = str(folder / "data")  # a throwaway catalog and models
    env = {k: v for k, v in os.environ.items() if k not in _ENV_OVERRIDES}
    settings = await asyncio.to_thread(demo_settings, folder, env)
    hub, demo_model = await start_hub(settings)
    log_file = folder / "logs" / "llama-orch.log"
    setup_logging(log_file, stream=None)

    async def start() -> Any:
        backend = build_backend(settings)
        await backend.start()
        controls = GuiControls(backend, folder / "config.toml", log_file, api_settings)
        return (backend, controls), lambda: backend.stop(deadline_s=2.0)

    thread: BackendThread[Any] = BackendThread(start)
    backend, controls = await asyncio.to_thread(thread.start)
    bridge = None
    traffic = Traffic(backend.api.url)
    try:
        bridge = EmbeddedBridge(backend.orch, controls, thread)
        window, markdown_chat = _window(bridge, folder)
        await _until(lambda: _settled(bridge), READY_TIMEOUT_S, "the pools to start")
        await bridge.drain("mock1", 3_600_000)  # a draining pool, so decisions show a filter
        conversation = await _chat(window)
        running = asyncio.ensure_future(traffic.run(HISTORY_S))
        await asyncio.sleep(HISTORY_S - 8.0)
        traffic.burst(4, max_tokens=400)  # long answers, live while the next grabs run
        await asyncio.sleep(1.5)
        written = [await _grab_tab(window, bridge, out, n) for n in ("pools", "tasks")]
        await running
        await _until(lambda: not conversation.busy, 120.0, "the chat answer")
        written += await chat_scenes(window, conversation, markdown_chat, out)
        written += [await _grab_tab(window, bridge, out, "decisions")]
        written.append(await _grab_refusals(window, bridge, out))
        written += [await _grab_tab(window, bridge, out, "metrics")]
        written.append(await _grab_settings(window, out))
        written.append(await grab_models(window, demo_model, out))
        window.hide()
        return written
    finally:
        await hub.stop()
        await traffic.close()
        if bridge is not None:
            bridge.close()
        await asyncio.to_thread(thread.stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: render the screenshots into ``argv[0]``. Returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m app.screenshots OUT_DIR", file=sys.stderr)
        return 2
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import qasync
    from PySide6.QtWidgets import QApplication

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(["llama-orch"])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    Path(args[0]).mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="llama-orch-shots-") as tmp:
            written = loop.run_until_complete(render(Path(args[0]), Path(tmp)))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
