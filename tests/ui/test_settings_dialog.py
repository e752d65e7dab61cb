"""SettingsDialog: LAN switch with a generated token, validation, apply."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtGui import QGuiApplication

from app.config import Settings, parse_settings, read_token_file, token_fingerprint
from app.ui.settings_dialog import SettingsDialog, curl_example, lan_urls
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge, FakeControls


class DirControls(FakeControls):
    """FakeControls whose config lives in a temporary folder."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        super().__init__(settings)
        self.folder = folder

    def config_path(self) -> str:
        return str(self.folder / "config.toml")


@pytest.fixture
def controls(tmp_path: Path) -> DirControls:
    settings = parse_settings({"server": {"bind": "127.0.0.1:8123"}}, env={})
    return DirControls(settings, tmp_path)


def open_dialog(qtbot: Any, controls: DirControls) -> SettingsDialog:
    dialog = SettingsDialog(FakeBridge(controls))
    dialog.env = {}
    qtbot.addWidget(dialog)
    return dialog


def visible_text(dialog: SettingsDialog) -> str:
    parts = [dialog.token_label.text(), dialog.urls_label.text(), dialog.message.text()]
    parts += [f.text() for f in (dialog.token_field, dialog.curl_field) if f.isVisibleTo(dialog)]
    return "\n".join(parts)


def test_lan_switch_creates_a_token_shown_once(
    qtbot: Any, qloop: QtAsync, controls: DirControls, tmp_path: Path
) -> None:
    dialog = open_dialog(qtbot, controls)
    assert not dialog.lan_switch.isChecked()
    assert "No token configured" in dialog.token_label.text()
    dialog.lan_switch.setChecked(True)
    assert dialog.bind_edit.text() == "0.0.0.0:8123"
    qloop.wait_until(lambda: dialog.new_token is not None)
    token = dialog.new_token
    assert token is not None and len(token) >= 40
    token_file = tmp_path / "token"
    assert read_token_file(token_file) == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert dialog.token_field.isVisibleTo(dialog) and dialog.token_field.text() == token
    assert token_fingerprint(token) in dialog.token_label.text()
    dialog.copy_token()
    assert QGuiApplication.clipboard().text() == token

    assert qloop.run(dialog.apply()) is True
    applied = controls.applied[-1]
    assert applied.server.bind == "0.0.0.0:8123"
    assert applied.server.auth_token_file == str(token_file)
    assert applied.auth_token == token
    assert "Applied" in dialog.message.text()

    again = open_dialog(qtbot, controls)
    assert again.lan_switch.isChecked()
    assert not again.token_field.isVisibleTo(again)
    assert token_fingerprint(token) in again.token_label.text()
    assert token not in visible_text(again)


def test_lan_without_a_token_is_refused(qtbot: Any, qloop: QtAsync, controls: DirControls) -> None:
    dialog = open_dialog(qtbot, controls)
    dialog.bind_edit.setText("0.0.0.0:8123")
    assert qloop.run(dialog.apply()) is False
    assert "needs a bearer token" in dialog.message.text()
    assert controls.applied == []


@pytest.mark.parametrize(
    "case",
    [
        ("bind", "localhost", "is not HOST:PORT"),
        ("bind", "127.0.0.1:70000", "port '70000'"),
        ("capacity", 0, "admission.queue_capacity"),
        ("capacity", 200_000, "admission.queue_capacity"),
        ("heartbeat", 4_000_000, "server.sse_heartbeat_ms"),
    ],
)
def test_invalid_values_are_refused_with_the_reason(
    qtbot: Any, qloop: QtAsync, controls: DirControls, case: tuple[str, Any, str]
) -> None:
    field, value, reason = case
    dialog = open_dialog(qtbot, controls)
    if field == "bind":
        dialog.bind_edit.setText(value)
    elif field == "capacity":
        dialog.capacity_box.setValue(value)
    else:
        dialog.heartbeat_box.setValue(value)
    assert qloop.run(dialog.apply()) is False
    assert reason in dialog.message.text()
    assert dialog.message.text().startswith("Not applied")
    assert controls.applied == []


def test_valid_changes_are_applied(qtbot: Any, qloop: QtAsync, controls: DirControls) -> None:
    dialog = open_dialog(qtbot, controls)
    dialog.bind_edit.setText("127.0.0.1:9001")
    dialog.auth_optional_box.setChecked(True)
    dialog.capacity_box.setValue(32)
    dialog.policy_box.setCurrentIndex(dialog.policy_box.findData("drop-lru"))
    dialog.heartbeat_box.setValue(15_000)
    assert qloop.run(dialog.apply()) is True
    (applied,) = controls.applied
    assert applied.server.bind == "127.0.0.1:9001"
    assert applied.server.auth_optional is True
    assert applied.server.sse_heartbeat_ms == 15_000
    assert applied.admission.queue_capacity == 32
    assert applied.admission.full_policy == "drop-lru"
    assert applied.auth_token is None


def test_refusal_from_the_app_is_shown(qtbot: Any, qloop: QtAsync, controls: DirControls) -> None:
    controls.refuse = "port 9001 is already in use; pick another port"
    dialog = open_dialog(qtbot, controls)
    dialog.bind_edit.setText("127.0.0.1:9001")
    assert qloop.run(dialog.apply()) is False
    assert "port 9001 is already in use" in dialog.message.text()
    assert controls.applied == []


def test_lan_urls_and_curl_example() -> None:
    addresses = ["192.168.1.20", "10.0.0.5"]
    assert lan_urls("127.0.0.1:8080", addresses) == []
    assert lan_urls("0.0.0.0:8080", addresses) == [
        "http://192.168.1.20:8080",
        "http://10.0.0.5:8080",
    ]
    assert lan_urls("192.168.1.20:9000", addresses) == ["http://192.168.1.20:9000"]
    assert lan_urls("bad", addresses) == []
    assert curl_example("http://10.0.0.5:8080", "tok") == (
        'curl -H "Authorization: Bearer tok" http://10.0.0.5:8080/v1/capabilities'
    )


def test_cpu_inference_session_limits_and_file_links(
    qtbot: Any, qloop: QtAsync, controls: DirControls
) -> None:
    dialog = open_dialog(qtbot, controls)
    assert not dialog.cpu_box.isChecked() and dialog.turns_box.value() == 8
    dialog.cpu_box.setChecked(True)
    dialog.ttl_box.setValue(1200)
    dialog.turns_box.setValue(0)
    dialog.budget_box.setValue(50_000)
    assert dialog.turns_box.text() == "unlimited"
    assert qloop.run(dialog.apply()) is True
    (applied,) = controls.applied
    assert applied.allow_cpu_inference is True
    assert (applied.sessions.ttl_s, applied.sessions.max_turns) == (1200, 0)
    assert applied.sessions.token_budget == 50_000
    links = dialog.files_label.text()
    assert (controls.folder / "config.toml").as_uri() in links
    assert Path(controls.log_path()).parent.as_uri() in links
    assert dialog.files_label.openExternalLinks()
