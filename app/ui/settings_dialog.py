"""The settings dialog: bind address, LAN exposure with a bearer token, admission, SSE.

Turning on "Serve on local network" binds to 0.0.0.0 (same port) and, when no
token is configured, creates one: written to a 0600 file next to the config
(in a worker thread), shown once with a Copy button, and afterwards known only
by its fingerprint. Apply re-validates the whole configuration the way loading
does and hands it to ``controls.apply_settings`` (atomic save + re-bind); any
refusal is shown in the dialog and nothing changes.
"""

from __future__ import annotations

import asyncio
import html
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.config import (
    ConfigError,
    Settings,
    generate_token,
    parse_bind,
    parse_settings,
    to_toml,
    token_fingerprint,
    write_token_file,
)
from app.orchestrator.loopback import is_loopback_host
from app.ui.api_urls import lan_addresses, reachable_urls
from app.ui.bridge import Bridge
from app.ui.login_section import LoginSection, LoginSwitches, default_switches

ERROR_COLOUR = "#d04848"
OK_COLOUR = "#2e9d4f"
DEFAULT_PORT = 8080


def lan_urls(bind: str, addresses: list[str]) -> list[str]:
    """Return the base URLs LAN clients can use for ``bind`` (``[]`` when loopback or
    malformed)."""
    try:
        host, port = parse_bind(bind)
    except ValueError:
        return []
    if is_loopback_host(host):
        return []
    host = "0.0.0.0" if host == "" else host
    return reachable_urls(f"http://{f'[{host}]' if ':' in host else host}:{port}", addresses)


def curl_example(url: str, token: str | None) -> str:
    """Return a curl command listing the capabilities with the bearer token."""
    return f'curl -H "Authorization: Bearer {token or "<token>"}" {url}/v1/capabilities'


class SettingsDialog(QDialog):
    """Edits the server, LAN access and admission settings, applied without a restart."""

    def __init__(
        self,
        bridge: Bridge,
        parent: QWidget | None = None,
        login: LoginSwitches | None = None,
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.controls = bridge.controls
        self.login_switches = login or default_switches(self.controls.config_path())
        self.settings: Settings = self.controls.current_settings()
        self.env: Mapping[str, str] = os.environ  # environment overrides re-applied on Apply
        self.new_token: str | None = None
        self.token_path: Path | None = None
        self._token_lock = asyncio.Lock()
        self._applying = False
        self.setWindowTitle("Settings")
        self.setMinimumWidth(640)
        self._build()
        self._load(self.settings)

    # ---- layout ----------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(self._server_group())
        layout.addWidget(self._lan_group())
        layout.addWidget(self._admission_group())
        layout.addWidget(self._sessions_group())
        layout.addWidget(self._files_label())
        self.login_section = LoginSection(self, self.login_switches, self)
        layout.addWidget(self.login_section)
        self.env_label = QLabel(self)
        self.env_label.setWordWrap(True)
        layout.addWidget(self.env_label)
        self.message = QLabel(self)
        self.message.setWordWrap(True)
        self.message.setAccessibleName("Settings status")
        layout.addWidget(self.message)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Apply | QDialogButtonBox.StandardButton.Close, self
        )
        self.apply_button = buttons.button(QDialogButtonBox.StandardButton.Apply)
        self.apply_button.setDefault(True)
        self.apply_button.clicked.connect(self._on_apply)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _server_group(self) -> QGroupBox:
        group = QGroupBox("Server", self)
        form = QFormLayout(group)
        self.bind_edit = QLineEdit(group)
        self.bind_edit.setPlaceholderText("127.0.0.1:8080")
        self.bind_edit.setAccessibleName("Bind address")
        self.bind_edit.setToolTip('HOST:PORT, e.g. "127.0.0.1:8080" or "0.0.0.0:8080"')
        self.bind_edit.textChanged.connect(self._refresh_lan)
        form.addRow("&Bind address:", self.bind_edit)
        self.lan_switch = QCheckBox("Serve on &local network", group)
        self.lan_switch.setAccessibleName("Serve on local network")
        self.lan_switch.setToolTip("Listen on 0.0.0.0; a bearer token becomes mandatory")
        self.lan_switch.toggled.connect(self._on_lan_toggled)
        form.addRow(self.lan_switch)
        self.auth_optional_box = QCheckBox("Loopback callers may skip the &token", group)
        self.auth_optional_box.setAccessibleName("auth_optional")
        form.addRow(self.auth_optional_box)
        self.heartbeat_box = QSpinBox(group)
        self.heartbeat_box.setRange(0, 100_000_000)
        self.heartbeat_box.setSuffix(" ms")
        self.heartbeat_box.setSpecialValueText("off")
        self.heartbeat_box.setAccessibleName("SSE heartbeat in milliseconds")
        form.addRow("SSE &heartbeat:", self.heartbeat_box)
        return group

    def _lan_group(self) -> QGroupBox:
        group = QGroupBox("Local network access", self)
        box = QVBoxLayout(group)
        self.token_label = QLabel(group)
        box.addWidget(self.token_label)
        row = QHBoxLayout()
        self.token_field = QLineEdit(group)
        self.token_field.setReadOnly(True)
        self.token_field.setAccessibleName("New API token")
        self.copy_button = QPushButton("&Copy token", group)
        self.copy_button.clicked.connect(self.copy_token)
        row.addWidget(self.token_field, 1)
        row.addWidget(self.copy_button)
        box.addLayout(row)
        self.urls_label = QLabel(group)
        self.urls_label.setWordWrap(True)
        self.urls_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.addWidget(self.urls_label)
        self.curl_field = QLineEdit(group)
        self.curl_field.setReadOnly(True)
        self.curl_field.setAccessibleName("curl example")
        box.addWidget(self.curl_field)
        return group

    def _admission_group(self) -> QGroupBox:
        group = QGroupBox("Admission", self)
        form = QFormLayout(group)
        self.capacity_box = QSpinBox(group)
        self.capacity_box.setRange(0, 10_000_000)
        self.capacity_box.setAccessibleName("Queue capacity per pool and priority")
        form.addRow("&Queue capacity:", self.capacity_box)
        self.policy_box = QComboBox(group)
        self.policy_box.addItem("Reject new tasks (the client retries later)", "reject")
        self.policy_box.addItem("Drop the oldest queued task", "drop-lru")
        self.policy_box.setAccessibleName("Full queue policy")
        form.addRow("When &full:", self.policy_box)
        return group

    def _sessions_group(self) -> QGroupBox:
        group = QGroupBox("Sessions and inference (used from the next start)", self)
        form = QFormLayout(group)
        self.cpu_box = QCheckBox("Allow pools on the &CPU (slow; for demos and tests)", group)
        form.addRow(self.cpu_box)
        self.ttl_box = _spin(group, 1, 86_400, " s", "Session lifetime in seconds")
        form.addRow("Session &lifetime:", self.ttl_box)
        self.turns_box = _spin(group, 0, 1_000_000, "", "Turns per session, 0 for unlimited")
        self.turns_box.setSpecialValueText("unlimited")
        form.addRow("T&urns per session:", self.turns_box)
        self.budget_box = _spin(group, 0, 1_000_000_000, " tokens", "Token budget per session")
        self.budget_box.setSpecialValueText("unlimited")
        form.addRow("Token &budget per session:", self.budget_box)
        form.addRow(
            QLabel("Limits apply to API clients; chats here carry on in a new session.", group)
        )
        return group

    def _files_label(self) -> QLabel:
        config = Path(self.controls.config_path())
        logs = Path(self.controls.log_path()).parent
        self.files_label = QLabel(
            f"Config file: <a href='{config.as_uri()}'>{html.escape(str(config))}</a>"
            f" · Logs: <a href='{logs.as_uri()}'>{html.escape(str(logs))}</a>",
            self,
        )
        self.files_label.setOpenExternalLinks(True)
        self.files_label.setWordWrap(True)
        self.files_label.setAccessibleName("Config file and logs folder")
        return self.files_label

    def _load(self, settings: Settings) -> None:
        server = settings.server
        self.bind_edit.setText(server.bind)
        self.lan_switch.blockSignals(True)
        self.lan_switch.setChecked(not _is_loopback_bind(server.bind))
        self.lan_switch.blockSignals(False)
        self.auth_optional_box.setChecked(server.auth_optional)
        self.heartbeat_box.setValue(server.sse_heartbeat_ms)
        self.capacity_box.setValue(settings.admission.queue_capacity)
        self.policy_box.setCurrentIndex(
            max(0, self.policy_box.findData(settings.admission.full_policy))
        )
        self.cpu_box.setChecked(settings.allow_cpu_inference)
        self.ttl_box.setValue(settings.sessions.ttl_s)
        self.turns_box.setValue(settings.sessions.max_turns)
        self.budget_box.setValue(settings.sessions.token_budget)
        overrides = settings.env_overrides
        self.env_label.setText(
            "".join(
                f"{k} comes from {v}; the environment wins over this dialog. "
                for k, v in overrides.items()
            )
        )
        self.env_label.setVisible(bool(overrides))
        self._refresh_lan()

    # ---- token -----------------------------------------------------------------------

    def has_token(self) -> bool:
        """Return True when a token is configured or was just created."""
        return self.settings.auth_token is not None or self.new_token is not None

    def token_file(self) -> Path:
        """Return where a new token is stored: ``<config dir>/token``."""
        return Path(self.controls.config_path()).expanduser().parent / "token"

    async def ensure_token(self) -> str | None:
        """Create and store a token when none exists; returns the new token, or None
        when one was already configured. Raises OSError or ConfigError when the file
        cannot be written. Writes in a worker thread (does not block the GUI)."""
        if self.settings.auth_token is not None:
            return None
        async with self._token_lock:
            if self.new_token is None:
                token, path = generate_token(), self.token_file()
                await asyncio.to_thread(write_token_file, path, token)
                self.new_token, self.token_path = token, path
        self._refresh_lan()
        return self.new_token

    async def _create_for_lan(self) -> None:
        try:
            await self.ensure_token()
        except (OSError, ConfigError) as exc:
            self.show_error(f"Could not store a new token in {self.token_file()}: {exc}")
            self.lan_switch.setChecked(False)

    def copy_token(self) -> None:
        """Put the new token on the clipboard."""
        if self.new_token:
            QGuiApplication.clipboard().setText(self.new_token)
            self.show_ok("Token copied to the clipboard.")

    def _token_text(self) -> str:
        if self.new_token is not None:
            return (
                f"New token, fingerprint {token_fingerprint(self.new_token)}, "
                f"stored in {self.token_path} (mode 0600).\n"
                "It is shown only now: copy it for your LAN clients.\n"
                "Afterwards only its fingerprint is shown."
            )
        token = self.settings.auth_token
        if token is not None:
            return (
                f"Token fingerprint {token_fingerprint(token)} (from {self.settings.token_source})."
            )
        return "No token configured. Turning on \u201cServe on local network\u201d creates one."

    def _refresh_lan(self) -> None:
        self.token_label.setText(self._token_text())
        fresh = self.new_token is not None
        self.token_field.setText(self.new_token or "")
        self.token_field.setCursorPosition(0)
        self.token_field.setVisible(fresh)
        self.copy_button.setVisible(fresh)
        urls = lan_urls(self.bind_edit.text(), lan_addresses())
        if _is_loopback_bind(self.bind_edit.text()):
            self.urls_label.setText("Only this machine can reach the API (loopback bind).")
        elif not urls:
            self.urls_label.setText("No network address found for this machine.")
        else:
            self.urls_label.setText("LAN URLs: " + "  ".join(urls))
        self.curl_field.setText(curl_example(urls[0], self.new_token) if urls else "")
        self.curl_field.setCursorPosition(0)
        self.curl_field.setVisible(bool(urls))
        self._grow_to_fit()

    def _grow_to_fit(self) -> None:
        layout = self.layout()
        if layout is None or not self.isVisible():
            return
        layout.activate()
        needed = layout.totalHeightForWidth(self.width())
        if needed > self.height():
            self.resize(self.width(), needed)

    def _on_lan_toggled(self, on: bool) -> None:
        port = _port_of(self.bind_edit.text(), self.settings.server.bind)
        self.bind_edit.setText(f"{'0.0.0.0' if on else '127.0.0.1'}:{port}")
        if on and not self.has_token():
            self.bridge.run(self._create_for_lan(), "creating the API token")

    # ---- apply -----------------------------------------------------------------------

    def candidate(self) -> Settings:
        """Return the current settings with the dialog's edits (not yet validated)."""
        update: dict[str, Any] = {
            "bind": self.bind_edit.text().strip(),
            "auth_optional": self.auth_optional_box.isChecked(),
            "sse_heartbeat_ms": self.heartbeat_box.value(),
        }
        if self.token_path is not None:
            update["auth_token_file"] = str(self.token_path)
        admission = self.settings.admission.model_copy(
            update={
                "queue_capacity": self.capacity_box.value(),
                "full_policy": str(self.policy_box.currentData()),
            }
        )
        server = self.settings.server.model_copy(update=update)
        sessions = self.settings.sessions.model_copy(
            update={
                "ttl_s": self.ttl_box.value(),
                "max_turns": self.turns_box.value(),
                "token_budget": self.budget_box.value(),
            }
        )
        return self.settings.model_copy(
            update={
                "server": server,
                "admission": admission,
                "sessions": sessions,
                "allow_cpu_inference": self.cpu_box.isChecked(),
            }
        )

    async def validated(self) -> Settings:
        """Return the edited settings validated as loading would (token file read,
        environment overrides applied). Raises ConfigError or ValueError with the
        reason. Runs the checks in a worker thread."""
        draft = self.candidate()
        host, _ = parse_bind(draft.server.bind)
        if not is_loopback_host(host) and not self.has_token():
            raise ValueError(
                f"serving on {draft.server.bind} needs a bearer token: turn on "
                "\u201cServe on local network\u201d to create one, or bind to 127.0.0.1"
            )
        data = tomllib.loads(to_toml(draft))
        return await asyncio.to_thread(parse_settings, data, self.env, draft.source_path)

    async def apply(self) -> bool:
        """Validate and apply the edits through ``controls.apply_settings``; returns True
        when applied. A refusal is shown in the dialog (nothing is applied)."""
        if self._applying:
            return False
        self._applying = True
        self.apply_button.setEnabled(False)
        try:
            return await self._apply()
        finally:
            self._applying = False
            self.apply_button.setEnabled(True)

    async def _apply(self) -> bool:
        try:
            if self.lan_switch.isChecked():
                await self.ensure_token()
            new = await self.validated()
            await self.controls.apply_settings(new)
        except ConfigError as exc:
            self.show_error("Not applied:\n" + "\n".join(str(p) for p in exc.problems))
            return False
        except (ValueError, OSError) as exc:
            self.show_error(f"Not applied: {exc}")
            return False
        self.settings = new
        self.show_ok(f"Applied. The API listens on {new.server.bind}.")
        return True

    def _on_apply(self) -> None:
        self.bridge.run(self.apply(), "applying settings")

    def show_error(self, text: str) -> None:
        """Show ``text`` as the dialog's error line."""
        self.message.setStyleSheet(f"color: {ERROR_COLOUR};")
        self.message.setText(text)
        self._grow_to_fit()

    def show_ok(self, text: str) -> None:
        """Show ``text`` as the dialog's confirmation line."""
        self.message.setStyleSheet(f"color: {OK_COLOUR};")
        self.message.setText(text)
        self._grow_to_fit()

    def done(self, result: int) -> None:
        """Close the dialog and forget the revealed token."""
        self.new_token = None
        self.token_field.clear()
        super().done(result)


def _spin(parent: QWidget, low: int, high: int, suffix: str, name: str) -> QSpinBox:
    box = QSpinBox(parent)
    box.setRange(low, high)
    box.setSuffix(suffix)
    box.setAccessibleName(name)
    return box


def _is_loopback_bind(bind: str) -> bool:
    try:
        return is_loopback_host(parse_bind(bind)[0])
    except ValueError:
        return True


def _port_of(*binds: str) -> int:
    for bind in binds:
        try:
            return parse_bind(bind)[1]
        except ValueError:
            continue
    return DEFAULT_PORT
