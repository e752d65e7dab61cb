"""File → Open config file / logs folder / models folder, and Help → About."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QSettings, QUrl
from PySide6.QtWidgets import QMenu, QMessageBox

from app.config import parse_settings
from app.orchestrator.ports import GpuInventory
from app.ui.main_window import MainWindow
from tests.ui.fakes import FakeBridge, FakeControls, gpu


class Opener:
    def __init__(self, ok: bool = True) -> None:
        self.urls: list[QUrl] = []
        self.ok = ok

    def __call__(self, url: QUrl) -> bool:
        self.urls.append(url)
        return self.ok


@pytest.fixture
def window(qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MainWindow:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    bridge = FakeBridge(FakeControls(parse_settings({}, env={})))
    bridge.inventory = GpuInventory(
        gpus=(gpu(0),), at=0.0, driver_version="550.54.14", cuda_version="12.4"
    )
    win = MainWindow(
        bridge,
        tray_available=lambda: False,
        settings=QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat),
    )
    qtbot.addWidget(win)
    return win


def menu_titles(win: MainWindow) -> list[str]:
    return [a.text() for a in win.menuBar().actions()]


def test_file_and_help_menus_have_the_desktop_actions(window: MainWindow) -> None:
    assert menu_titles(window) == ["&File", "&View", "&Help"]
    file_menu = window.menuBar().actions()[0].menu()
    assert isinstance(file_menu, QMenu)
    texts = [a.text() for a in file_menu.actions()]
    assert texts[-5:-2] == ["Open &config file", "Open &logs folder", "Open &models folder"]
    assert texts[-1] == "&Quit"


def test_the_open_actions_open_the_files_with_the_desktop(
    window: MainWindow, tmp_path: Path
) -> None:
    opener = Opener()
    window.desktop_actions.open_url = opener

    window.desktop_actions.config_action.trigger()
    window.desktop_actions.logs_action.trigger()
    window.desktop_actions.models_action.trigger()

    assert [u.toLocalFile() for u in opener.urls] == [
        "/tmp/llama-orch-test/config.toml",
        "/tmp/llama-orch-test",
        str(tmp_path / "data/llama-orch/models"),
    ]
    assert (tmp_path / "data/llama-orch/models").is_dir()


def test_a_failed_open_is_said_in_the_status_bar(window: MainWindow) -> None:
    window.desktop_actions.open_url = Opener(ok=False)

    assert not window.desktop_actions.open_path("/tmp/llama-orch-test/config.toml")
    assert window.errors[-1][1] == "No application could open /tmp/llama-orch-test/config.toml."


def test_about_shows_the_version_report(window: MainWindow, qtbot: Any) -> None:
    box = window.desktop_actions.show_about()
    qtbot.addWidget(box)

    lines = box.text().splitlines()
    assert lines[0].startswith("llama-orch ")
    assert lines[1] == "llama.cpp engine: 0.3.36"
    assert lines[2].startswith("Qt: 6.")
    assert lines[3] == "NVIDIA driver: 550.54.14, CUDA 12.4"
    assert box.windowTitle() == "About llama-orch"
    assert isinstance(box, QMessageBox) and box.isVisible()
    box.grab().save("/tmp/about.png")
    box.close()
