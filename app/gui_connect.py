"""``llama-orch gui --connect URL``: the window as a client of a running server.

Part of the composition root (called by app.main): wires app.client's
``HttpBridge`` into app.ui's window, and finds out whether the configured port
already answers as a llama-orch server (then the window offers to watch it
instead of failing with "address already in use").
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.ui.bridge import Bridge
    from app.ui.main_window import MainWindow

log = logging.getLogger("llama_orch.main")

Ask = Callable[[str], bool]
"""Ask the user a yes/no question; True for yes. Blocks (modal)."""


def client_host(host: str) -> str:
    """Return the address a client dials for a bind host (wildcards mean loopback). Pure."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def base_url(host: str, port: int) -> str:
    """Return the URL clients use for a bind address. Pure."""
    dial = client_host(host)
    return f"http://[{dial}]:{port}" if ":" in dial else f"http://{dial}:{port}"


def running_server(host: str, port: int, timeout_s: float = 2.0) -> str | None:
    """Return the URL when a llama-orch server answers on ``host:port``, else None
    (nothing listens, or another program does). Blocks up to ``timeout_s`` twice."""
    try:
        with socket.create_connection((client_host(host), port), timeout=timeout_s):
            pass
    except OSError:
        return None
    url = base_url(host, port)
    try:
        with urllib.request.urlopen(f"{url}/v1/capabilities", timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 401: a llama-orch server that wants a token
        try:
            body = json.loads(exc.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None
    ours = isinstance(body, dict) and ("api_version" in body or "code" in body)
    return url if ours else None


def ask_to_connect(question: str) -> bool:
    """Ask with a modal box; on a platform without a screen (offscreen) say yes."""
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication, QMessageBox

    if QApplication.instance() is None:
        QApplication(sys.argv[:1])
    if QGuiApplication.platformName() in ("offscreen", "minimal"):
        return True
    yes, no = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
    return QMessageBox.question(None, "llama-orch is already running", question, yes | no) == yes


def offer_question(url: str) -> str:
    """Return the question asked when ``url`` already serves llama-orch. Pure."""
    return (
        f"A llama-orch server already runs at {url} (perhaps `llama-orch serve` or its user "
        "service). Watch it in this window instead of starting a second server?"
    )


def cmd_gui_connect(url: str, token: str | None, *, minimized: bool = False) -> int:
    """Run the window against the server at ``url``; returns the exit code (1 when it
    cannot be watched: the sentence is shown in a dialog and on stderr)."""
    from app.client.http import ServerClient
    from app.client.http_bridge import HttpBridge
    from app.ui.app import run_window

    client = ServerClient(url, token)
    holder: list[HttpBridge] = []

    async def attach() -> Bridge:
        bridge = HttpBridge(client)
        holder.append(bridge)
        try:
            await bridge.start()
        except Exception:
            await client.close()
            raise
        log.info("watching the llama-orch server at %s", url)
        print(f"llama-orch: watching the server at {url}", file=sys.stderr, flush=True)
        return bridge

    async def detach(_bridge: Bridge) -> None:
        await holder[0].aclose()

    def wire(window: MainWindow, _bridge: Bridge) -> None:
        status = window.statusBar()
        holder[0].statusChanged.connect(lambda text: status.showMessage(text, 10_000))
        window.setWindowTitle(f"llama-orch — {url}")

    return run_window(attach, detach, minimized=minimized, on_window=wire)


def connect_token(token_file: str | None) -> str | None:
    """Return the token from ``token_file``, else $AUTH_TOKEN, else None. Raises
    ValueError with a sentence when the file cannot be read. Blocks (disk)."""
    from app.client.http import read_token

    if token_file:
        return read_token(token_file)
    return os.environ.get("AUTH_TOKEN") or None
