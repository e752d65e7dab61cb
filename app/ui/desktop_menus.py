"""File → Open config file / logs folder / models folder, and Help → About.

The About text is the same report as ``llama-orch --version``, built from what
the bridge knows (the engines of the pools and the NVIDIA driver of the
machine the server runs on), so it is right in both the embedded and the
connected window.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import PySide6
from PySide6.QtCore import QUrl, qVersion
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import QMenu, QMessageBox, QWidget

from app.config.schema import xdg_dir
from app.desktop.about import VersionFacts, app_version, version_lines

UrlOpener = Callable[[QUrl], bool]


def models_folder() -> Path:
    """Return the folder of downloaded and generated models ($XDG_DATA_HOME/llama-orch/models)."""
    return xdg_dir(os.environ, "XDG_DATA_HOME", ".local/share") / "llama-orch" / "models"


def about_lines(bridge: Any) -> list[str]:
    """Return the version report for the server behind ``bridge``. Does not block."""
    pools = bridge.pools()
    inventory = bridge.gpu()
    engines = [p.engine_version for p in pools if p.engine == "llamacpp" and p.engine_version]
    return version_lines(
        VersionFacts(
            app=app_version(),
            engines=engines,
            qt=f"{qVersion()} (PySide6 {PySide6.__version__})",
            driver=inventory.driver_version,
            cuda=getattr(inventory, "cuda_version", None),
        )
    )


class DesktopActions:
    """The File menu's Open actions and Help → About of one window."""

    def __init__(
        self,
        window: QWidget,
        bridge: Any,
        open_url: UrlOpener = QDesktopServices.openUrl,
    ) -> None:
        self.window = window
        self.bridge = bridge
        self.open_url = open_url
        controls = bridge.controls
        self.config_action = self._action("Open &config file", controls.config_path)
        self.logs_action = self._action(
            "Open &logs folder", lambda: str(Path(controls.log_path()).parent)
        )
        self.models_action = self._action("Open &models folder", lambda: str(models_folder()))
        self.about_action = QAction("&About llama-orch", window)
        self.about_action.triggered.connect(self.show_about)

    def _action(self, title: str, where: Callable[[], str]) -> QAction:
        action = QAction(title, self.window)
        action.triggered.connect(lambda: self.open_path(where()))
        return action

    def add_to_file(self, menu: QMenu) -> None:
        """Put the three Open actions in ``menu`` (the File menu)."""
        for action in (self.config_action, self.logs_action, self.models_action):
            menu.addAction(action)

    def add_to_help(self, menu: QMenu) -> None:
        """Put About in ``menu`` (the Help menu)."""
        menu.addAction(self.about_action)

    def open_path(self, path: str) -> bool:
        """Open ``path`` with the desktop's default application (a folder is created
        first); returns False, with the reason in the status bar, when it cannot."""
        if not path:
            self.bridge.report_error("This window watches a remote server: its files are there.")
            return False
        target = Path(path).expanduser()
        if not target.suffix and not target.exists():
            target.mkdir(parents=True, exist_ok=True)
        if not self.open_url(QUrl.fromLocalFile(str(target))):
            self.bridge.report_error(f"No application could open {target}.")
            return False
        return True

    def about_text(self) -> str:
        """Return the About box's text (the ``--version`` report)."""
        return "\n".join(about_lines(self.bridge))

    def show_about(self) -> QMessageBox:
        """Open the About box (window-modal, does not block) and return it."""
        box = QMessageBox(QMessageBox.Icon.Information, "About llama-orch", self.about_text())
        box.setParent(self.window, box.windowFlags())
        box.setInformativeText("A home-lab LLM orchestrator with GPU-aware placement.")
        box.open()
        return box
