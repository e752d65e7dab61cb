"""The window as a client: `HttpBridge` against a separate `llama-orch serve` process.

Real subprocess, real aiohttp server on loopback, real SSE; the window is the real
MainWindow (pytest-qt, offscreen) on a qasync loop.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings

from app.client.http import ServerClient, Unauthorized, Unreachable
from app.client.http_bridge import HttpBridge, parse_metrics
from app.gui_connect import offer_question, running_server
from app.ui.main_window import MainWindow
from tests.integration.support import clean_env, free_port
from tests.ui.conftest import QtAsync
from tests.ui.support import type_and_send

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "connect-test-token-0123456789"


def write_config(home: Path, port: int) -> Path:
    (home / "token").write_text(TOKEN + "\n")
    (home / "token").chmod(0o600)
    cfg = home / "c.toml"
    cfg.write_text(
        f'[server]\nbind = "127.0.0.1:{port}"\nauth_token_file = "{home / "token"}"\n\n'
        '[[pools]]\nid = "m0"\nengine = "mock"\nmodel = "mock-a"\ndevice_mask = "0"\n'
        "mock_tokens_per_s = 400\n\n"
        '[[pools]]\nid = "m1"\nengine = "mock"\nmodel = "mock-b"\ndevice_mask = "1"\n'
        "mock_tokens_per_s = 400\n"
    )
    return cfg


class Server:
    """`llama-orch serve` in a subprocess that can be stopped and started again."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = write_config(home, self.port)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--config", str(self.config)],
            cwd=ROOT, env=clean_env(self.home), text=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while running_server("127.0.0.1", self.port, 0.5) is None:
            assert self.proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not answer"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def connected(
    qtbot: Any, qloop: QtAsync, server: Server, tmp_path: Path
) -> Iterator[Callable[..., tuple[HttpBridge, MainWindow]]]:
    made: list[HttpBridge] = []

    def connect(token: str | None = TOKEN) -> tuple[HttpBridge, MainWindow]:
        bridge = HttpBridge(ServerClient(server.url, token), poll_s=0.2)
        made.append(bridge)
        qloop.run(bridge.start(), timeout=10)
        ini = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
        window = MainWindow(bridge, tray_available=lambda: False, settings=ini, ask=lambda *_: True)
        qtbot.addWidget(window)
        return bridge, window

    yield connect
    for bridge in made:
        qloop.run(bridge.aclose())


def test_pools_appear_and_a_chat_streams(
    connected: Callable[..., tuple[HttpBridge, MainWindow]], qloop: QtAsync
) -> None:
    bridge, window = connected()

    assert {p.pool_id for p in bridge.pools()} == {"m0", "m1"}
    qloop.wait_until(lambda: set(window.pools_view.pool_cards) == {"m0", "m1"}, 5)
    assert window.api_label.text().startswith("API: http://127.0.0.1:")

    conv = window.chat.current()
    type_and_send(conv, "Hello over HTTP", qloop)
    qloop.wait_until(lambda: not conv.busy, 20)

    assert conv.status.text() == "Done.", conv.status.text()
    assert "Assistant" in conv.transcript.toPlainText()
    assert conv.last_stats and "tokens" in conv.last_stats
    qloop.wait_until(lambda: any(t.state == "done" for t in bridge.tasks()), 5)
    qloop.wait_until(lambda: bool(bridge.decisions()), 5)
    qloop.wait_until(lambda: any(t.artifact_id for t in bridge.tasks()), 5)
    kept = next(t for t in bridge.tasks() if t.artifact_id)
    art = qloop.run(bridge.artifact(str(kept.artifact_id)))
    assert art.content["task_id"] == kept.task_id and "event: token" in art.content["transcript"]


def test_drain_from_the_window_drains_the_server(
    connected: Callable[..., tuple[HttpBridge, MainWindow]], qloop: QtAsync, server: Server
) -> None:
    _bridge, window = connected()
    qloop.wait_until(lambda: "m0" in window.pools_view.pool_cards, 5)

    window.pools_view.pool_cards["m0"][0].drain_button.click()

    qloop.wait_until(lambda: server.get("/v1/pools")[0]["draining"], 10)
    pools = {p["pool_id"]: p for p in server.get("/v1/pools")}
    assert pools["m0"]["draining"] and not pools["m1"]["draining"]
    card = window.pools_view.pool_cards["m0"][0]
    qloop.wait_until(lambda: card.drain_button.text() == "Resume", 5)


def test_the_window_survives_the_server_restarting(
    connected: Callable[..., tuple[HttpBridge, MainWindow]], qloop: QtAsync, server: Server
) -> None:
    bridge, window = connected()
    said: list[str] = []
    bridge.statusChanged.connect(said.append)

    server.stop()
    qloop.wait_until(lambda: not bridge.connected, 10)
    assert "Cannot reach the llama-orch server at" in window.errors[-1][1]
    assert window.errors[-1][1].endswith("Reconnecting…")
    assert {p.pool_id for p in bridge.pools()} == {"m0", "m1"}  # the last snapshot stays

    server.start()
    qloop.wait_until(lambda: bridge.connected, 20)
    assert said == [f"Reconnected to the llama-orch server at {server.url}."]
    conv = window.chat.current()
    type_and_send(conv, "after the restart", qloop)
    qloop.wait_until(lambda: not conv.busy, 20)
    assert conv.status.text() == "Done."


def test_a_wrong_token_is_one_sentence(server: Server, qloop: QtAsync) -> None:
    bridge = HttpBridge(ServerClient(server.url, "not-the-token"))

    with pytest.raises(Unauthorized) as refused:
        qloop.run(bridge.start(), timeout=10)
    qloop.run(bridge.aclose())

    assert str(refused.value) == (
        f"The server at {server.url} refused the token (HTTP 401): pass the server's token "
        "with --token-file FILE, a file holding the token the server was given."
    )


def test_gui_connect_with_a_wrong_token_says_so_and_exits_1(server: Server, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    env = clean_env(tmp_path / "client", QT_QPA_PLATFORM="offscreen")

    done = subprocess.run(
        [sys.executable, "-m", "app", "gui", "--connect", server.url, "--token-file", str(wrong)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    assert f"The server at {server.url} refused the token (HTTP 401)" in done.stderr
    assert "Traceback" not in done.stderr


def test_gui_on_a_port_a_server_answers_connects_to_it(server: Server, tmp_path: Path) -> None:
    """The configured port already serves llama-orch: the window watches it (offscreen
    answers the offer with yes) instead of failing with "address already in use"."""
    env = clean_env(tmp_path, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "gui", "--config", str(server.config)],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while line and "watching the server" not in line:
            line = proc.stderr.readline()
        assert line.strip() == f"llama-orch: watching the server at {server.url}"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert "A llama-orch server already runs at" in offer_question(server.url)


def test_unreachable_and_metrics_parsing(qloop: QtAsync) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    bridge = HttpBridge(ServerClient(url))
    with pytest.raises(Unreachable, match=r"^Cannot reach the llama-orch server at http"):
        qloop.run(bridge.start(), timeout=10)
    qloop.run(bridge.aclose())
    counters, gpus = parse_metrics(
        "# TYPE tasks_started counter\ntasks_started_total 3.0\n"
        '# TYPE gpu_utilization gauge\ngpu_utilization{device="1"} 40.0\n'
        '# TYPE vram_used_bytes gauge\nvram_used_bytes{device="1"} 1024.0\n'
    )
    assert counters["started"] == 3
    assert [(g.index, g.utilization_pct, g.vram_used_bytes) for g in gpus] == [(1, 40.0, 1024)]


def test_the_tray_follows_the_connected_server(
    qtbot: Any, qloop: QtAsync, server: Server, tmp_path: Path
) -> None:
    bridge = HttpBridge(ServerClient(server.url, TOKEN), poll_s=0.2)
    qloop.run(bridge.start(), timeout=10)
    ini = QSettings(str(tmp_path / "tray.ini"), QSettings.Format.IniFormat)
    window = MainWindow(bridge, tray_available=lambda: True, settings=ini, ask=lambda *_: True)
    qtbot.addWidget(window)
    try:
        icon = window.tray.icon
        assert window.tray.active and icon is not None
        qloop.wait_until(lambda: icon.toolTip().startswith("llama-orch — "), 5)
        window.pause_action.trigger()  # the tray's "Pause admissions" drains every pool
        qloop.wait_until(lambda: all(p["draining"] for p in server.get("/v1/pools")), 10)
    finally:
        window.tray.hide()
        qloop.run(bridge.aclose())
