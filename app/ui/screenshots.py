"""Render every view of the desktop app to PNG files, using the real stack.

``python -m app.ui.screenshots OUT_DIR`` (``make screenshots``) writes a
throwaway config (the demo llama.cpp pool plus a mock pool), starts the real
engines, core and API server on one qasync loop, streams prompts from the chat
panel and from LAN-style clients for a while, then grabs each tab of the main
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

HISTORY_S = 45.0  # traffic before the grabs, so the charts have some history
READY_TIMEOUT_S = 180.0
TABS = {"pools": 0, "chat": 1, "decisions": 2, "metrics": 3, "tasks": 4}
LAN_CLIENT = "lan:192.168.1.23"
CHAT_PROMPT = "Which GPU in my home lab should run a 7B model, and why?"
_ENV_OVERRIDES = ("BIND_ADDR", "ORCHD_ADDR", "AUTH_TOKEN", "AUTH_OPTIONAL", "TRUST_PROXY_AUTH")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_settings(folder: Path, env: dict[str, str]) -> Any:
    """Write the demo config (demo llama.cpp pool + a mock pool) under ``folder`` and
    return the loaded Settings. Raises ConfigError or OSError. BLOCKING."""
    from app.config import PoolSettings, load_settings, save_settings
    from app.main import load_or_create_settings  # noqa: TID251 (composition root)

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
    return all(p.state in ("ready", "needs_model", "failed") for p in bridge.pools())


class Traffic:
    """LAN-style clients submitting and streaming tasks next to the chat panel."""

    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge
        self.streams: set[asyncio.Task[None]] = set()
        self.count = 0

    def submit(self, prompt: str, *, cancel_after: float | None = None, **kw: Any) -> None:
        """Submit one task as a LAN client and stream it in the background."""
        from app.orchestrator.contracts import TaskRequest
        from app.orchestrator.errors import OrchError

        self.count += 1
        req = TaskRequest(prompt=prompt, seed=self.count, **kw)
        api = "openai" if self.count % 3 == 0 else "orchqueue"
        with contextlib.suppress(OrchError):  # refusals are part of the picture
            resp = self.bridge.orch.submit(req, identity=LAN_CLIENT, api=api)
            task = asyncio.ensure_future(self._drain(str(resp.task_id), cancel_after))
            self.streams.add(task)
            task.add_done_callback(self.streams.discard)

    async def _drain(self, task_id: str, cancel_after: float | None) -> None:
        if cancel_after is not None:
            asyncio.get_running_loop().call_later(cancel_after, self._cancel, task_id)
        async for _event in self.bridge.stream(task_id):
            pass

    def _cancel(self, task_id: str) -> None:
        with contextlib.suppress(Exception):
            self.bridge.cancel(task_id)

    def burst(self, n: int, *, max_tokens: int) -> None:
        """Submit ``n`` tasks at once, alternating priorities; every 7th is canceled."""
        from app.orchestrator.contracts import Priority

        for _ in range(n):
            self.submit(
                f"Background job {self.count}: describe a llama.",
                max_tokens=max_tokens,
                priority=Priority.BATCH if self.count % 2 == 0 else Priority.INTERACTIVE,
                cancel_after=0.8 if self.count % 7 == 0 else None,
            )

    async def run(self, seconds: float) -> None:
        """Keep a trickle of tasks going for ``seconds``, then wait for them to end."""
        from app.orchestrator.contracts import PlacementMode, PlacementOverrides

        pin = PlacementOverrides(mode=PlacementMode.PIN, pin_pool_id="mock0")
        avoid = PlacementOverrides(avoid_pools=["demo"])
        nowhere = PlacementOverrides(
            mode=PlacementMode.PIN, pin_pool_id="gpu9", allow_fallback=False
        )
        self.submit("Summarise the queue policy.", max_tokens=48, placement=pin)
        self.submit("List three uses of a home-lab GPU.", max_tokens=48, placement=avoid)
        self.submit("This pool does not exist.", max_tokens=16, placement=nowhere)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.burst(3, max_tokens=48)  # bursts, so queues form
            await asyncio.sleep(2.5)
        await _until(lambda: not self.streams, 120.0, "the LAN streams to finish")


async def _chat(window: Any) -> Any:
    conversation = window.chat.current()
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
        done = [t for t in bridge.tasks(50) if t.identity == LAN_CLIENT and t.state == "done"]
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


async def render(out: Path, folder: Path) -> list[Path]:
    """Run the demo stack in ``folder``, drive it, and write the PNGs into ``out``.

    Returns the written paths. Raises TimeoutError when the pools never settle.
    """
    from PySide6.QtCore import QSettings

    from app.gui_controls import GuiControls
    from app.logs import setup_logging
    from app.main import FIRST_START_BANNER, api_settings, build_backend  # noqa: TID251
    from app.ui.bridge import OrchestratorBridge
    from app.ui.main_window import MainWindow

    env = {k: v for k, v in os.environ.items() if k not in _ENV_OVERRIDES}
    settings = await asyncio.to_thread(demo_settings, folder, env)
    log_file = folder / "logs" / "llama-orch.log"
    setup_logging(log_file, stream=None)
    backend = build_backend(settings)
    await backend.start()
    bridge = None
    try:
        controls = GuiControls(backend, folder / "config.toml", log_file, api_settings)
        bridge = OrchestratorBridge(backend.orch, controls)
        ini = QSettings(str(folder / "window.ini"), QSettings.Format.IniFormat)
        window = MainWindow(
            bridge, banner=FIRST_START_BANNER, tray_available=lambda: False, settings=ini
        )
        window.resize(1280, 860)
        window.show()
        await _until(lambda: _settled(bridge), READY_TIMEOUT_S, "the pools to start")
        bridge.drain("mock1", 3_600_000)  # a draining pool, so decisions show a filter
        conversation = await _chat(window)
        traffic = Traffic(bridge)
        running = asyncio.ensure_future(traffic.run(HISTORY_S))
        await asyncio.sleep(HISTORY_S - 8.0)
        traffic.burst(4, max_tokens=400)  # long answers, live while the next grabs run
        await asyncio.sleep(1.5)
        written = [await _grab_tab(window, bridge, out, n) for n in ("pools", "tasks")]
        await running
        await _until(lambda: not conversation.busy, 120.0, "the chat answer")
        written += [await _grab_tab(window, bridge, out, n) for n in ("chat", "decisions")]
        written += [await _grab_tab(window, bridge, out, "metrics")]
        written.append(await _grab_settings(window, out))
        window.hide()
        window.deleteLater()
        return written
    finally:
        if bridge is not None:
            bridge.close()
        await backend.stop(deadline_s=2.0)
        await asyncio.sleep(0.1)  # lets Qt run the deferred deletes


def _tear_down(app: Any) -> None:
    """Destroy every widget while Python is fully alive: Qt objects collected during
    interpreter shutdown can crash PySide."""
    import gc

    from PySide6.QtCore import QCoreApplication, QEvent

    for widget in app.topLevelWidgets():
        widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: render the screenshots into ``argv[0]``. Returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m app.ui.screenshots OUT_DIR", file=sys.stderr)
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
        _tear_down(app)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
