"""Start-up errors in GUI mode: a dialog and the same text on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from app.ui.start_error import TITLE, report_start_error
from tests.integration.support import clean_env

ROOT = Path(__file__).resolve().parents[2]


def test_the_message_goes_to_stderr_and_the_dialog(
    qapp: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    shown: list[str] = []

    report_start_error("Another program already listens on 127.0.0.1:8080.", show=shown.append)

    assert shown == ["Another program already listens on 127.0.0.1:8080."]
    assert capsys.readouterr().err == "Another program already listens on 127.0.0.1:8080.\n"


def test_the_dialog_is_a_critical_box_with_the_text(qapp: Any) -> None:
    seen: list[tuple[str, str]] = []

    def close_box() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            seen.append((box.windowTitle(), box.text()))
            box.accept()
        else:
            QTimer.singleShot(20, close_box)

    QTimer.singleShot(20, close_box)
    QMessageBox.critical(None, TITLE, "bad config")

    assert seen == [(TITLE, "bad config")]


def test_gui_with_a_broken_config_says_why_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nbind = "127.0.0.1:8080"\nbogus = 1\n')
    env = clean_env(tmp_path, QT_QPA_PLATFORM="offscreen")

    done = subprocess.run(
        [sys.executable, "-m", "app", "gui", "--config", str(cfg)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 2
    assert done.stderr.startswith(f"The config file {cfg} has problems:\n")
    assert "bogus" in done.stderr
