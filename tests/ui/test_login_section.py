"""Settings → At login: start at login and the user service, written for real into a
temporary HOME (systemctl is a recording runner)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.config import parse_settings
from app.desktop.install import DesktopInstaller, UserPaths
from app.ui.settings_dialog import SettingsDialog
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge, FakeControls


class Systemctl:
    def __init__(self, refuse: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.refuse = refuse

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(list(argv))
        if self.refuse and "enable" in argv:
            return 1, self.refuse
        return 0, ""


def dialog_for(qtbot: Any, home: Path, run: Systemctl) -> tuple[SettingsDialog, DesktopInstaller]:
    switches = DesktopInstaller(
        UserPaths.from_env({"HOME": str(home)}), home / "c.toml", command=["/usr/bin/llama-orch"],
        run=run,
    )  # fmt: skip
    bridge = FakeBridge(FakeControls(parse_settings({}, env={})))
    dialog = SettingsDialog(bridge, login=switches)
    qtbot.addWidget(dialog)
    return dialog, switches


def test_start_at_login_writes_and_removes_the_autostart_entry(
    qtbot: Any, qloop: QtAsync, tmp_path: Path
) -> None:
    dialog, switches = dialog_for(qtbot, tmp_path, Systemctl())
    section = dialog.login_section
    assert not section.autostart_box.isChecked()

    section.autostart_box.setChecked(True)
    qloop.wait_until(switches.autostart_enabled)
    qloop.wait_until(lambda: "starts in the tray at login" in dialog.message.text())
    assert "--minimized" in switches.paths.autostart.read_text()

    section.autostart_box.setChecked(False)
    qloop.wait_until(lambda: not switches.autostart_enabled())


def test_the_user_service_switch_enables_the_unit(
    qtbot: Any, qloop: QtAsync, tmp_path: Path
) -> None:
    run = Systemctl()
    dialog, switches = dialog_for(qtbot, tmp_path, run)

    dialog.login_section.service_box.setChecked(True)

    qloop.wait_until(lambda: "next login" in dialog.message.text())
    assert switches.paths.service.is_file()
    assert ["systemctl", "--user", "enable", "llama-orch.service"] in run.calls


def test_a_refused_service_is_said_and_the_box_unticked(
    qtbot: Any, qloop: QtAsync, tmp_path: Path
) -> None:
    dialog, _ = dialog_for(qtbot, tmp_path, Systemctl(refuse="Failed to connect to bus"))
    box = dialog.login_section.service_box

    box.setChecked(True)

    qloop.wait_until(lambda: "Could not enable" in dialog.message.text())
    assert dialog.message.text() == (
        "Could not enable the user service: Failed to connect to bus "
        "(is a systemd user session running?)."
    )
    assert not box.isChecked()


def test_the_boxes_show_the_current_state(qtbot: Any, tmp_path: Path) -> None:
    first, switches = dialog_for(qtbot, tmp_path, Systemctl())
    switches.set_autostart(True)
    switches.paths.service_wanted.parent.mkdir(parents=True)
    switches.paths.service_wanted.symlink_to(switches.paths.service)

    again, _ = dialog_for(qtbot, tmp_path, Systemctl())

    assert not first.login_section.autostart_box.isChecked()
    assert again.login_section.autostart_box.isChecked()
    assert again.login_section.service_box.isChecked()
    again.show()
    again.grab().save("/tmp/settings.png")


def test_a_connected_window_uses_the_default_config_for_the_service(
    monkeypatch: Any, tmp_path: Path
) -> None:
    from app.ui.login_section import default_switches

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("LLAMA_ORCH_CONFIG", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)

    switches = default_switches("")

    assert isinstance(switches, DesktopInstaller)
    assert switches.config == tmp_path / ".config/llama-orch/config.toml"
