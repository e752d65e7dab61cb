"""The Settings dialog's "At login" section: start the app at login, run the server
as a systemd user service. The files are written in a worker thread by a
``LoginSwitches`` (app.desktop.install.DesktopInstaller in the app)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from PySide6.QtWidgets import QCheckBox, QGroupBox, QVBoxLayout, QWidget

from app.config import default_config_path
from app.desktop.install import DesktopInstaller, UserPaths


class LoginSwitches(Protocol):
    """The two per-user switches; every method blocks (disk, systemctl)."""

    def autostart_enabled(self) -> bool: ...

    def set_autostart(self, on: bool) -> object:
        """Write or remove the XDG autostart entry. Raises OSError."""

    def service_enabled(self) -> bool: ...

    def set_service(self, on: bool) -> str:
        """Enable or disable the user service; return a sentence. Raises OSError."""


def default_switches(config_path: str) -> LoginSwitches:
    """Return the switches for this user and config file (the default config when
    ``config_path`` is empty, as in a window watching another server)."""
    config = Path(config_path).expanduser() if config_path else default_config_path()
    return DesktopInstaller(UserPaths.from_env(), config)


class LoginSection(QGroupBox):
    """Two check boxes; each toggle is applied at once and reported in the dialog.

    ``dialog`` offers ``bridge.run``, ``show_ok`` and ``show_error`` (SettingsDialog).
    """

    def __init__(self, dialog: Any, switches: LoginSwitches, parent: QWidget | None = None):
        super().__init__("At login", parent)
        self.dialog = dialog
        self.switches = switches
        box = QVBoxLayout(self)
        self.autostart_box = QCheckBox("&Start at login (in the tray)", self)
        self.autostart_box.setAccessibleName("Start at login")
        self.service_box = QCheckBox("Run the server as a &user service (systemd)", self)
        self.service_box.setAccessibleName("Run the server as a user service")
        self.service_box.setToolTip(
            "llama-orch serve starts at login and restarts on failure; "
            "the window then connects to it"
        )
        box.addWidget(self.autostart_box)
        box.addWidget(self.service_box)
        self.autostart_box.setChecked(switches.autostart_enabled())
        self.service_box.setChecked(switches.service_enabled())
        self.autostart_box.toggled.connect(self._on_autostart)
        self.service_box.toggled.connect(self._on_service)

    def _on_autostart(self, on: bool) -> None:
        self.dialog.bridge.run(self.apply_autostart(on), "changing start at login")

    def _on_service(self, on: bool) -> None:
        self.dialog.bridge.run(self.apply_service(on), "changing the user service")

    async def apply_autostart(self, on: bool) -> bool:
        """Write or remove the autostart entry; returns True when done. A failure is
        shown in the dialog and the box is unticked again."""
        try:
            await asyncio.to_thread(self.switches.set_autostart, on)
        except OSError as exc:
            return self._failed(self.autostart_box, f"Could not change start at login: {exc}")
        self.dialog.show_ok(
            "llama-orch starts in the tray at login."
            if on
            else "llama-orch no longer starts at login."
        )
        return True

    async def apply_service(self, on: bool) -> bool:
        """Enable or disable the user service; returns True when done. A failure is
        shown in the dialog and the box is set back."""
        try:
            said = await asyncio.to_thread(self.switches.set_service, on)
        except OSError as exc:
            return self._failed(self.service_box, str(exc))
        self.dialog.show_ok(said)
        return True

    def _failed(self, box: QCheckBox, message: str) -> bool:
        box.blockSignals(True)
        box.setChecked(not box.isChecked())
        box.blockSignals(False)
        self.dialog.show_error(message)
        return False
