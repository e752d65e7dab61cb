"""install-desktop for the current user: the files, their contents and validation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.desktop.install import (
    ICON_SIZES,
    DesktopInstaller,
    UserPaths,
    desktop_exec,
    packaging_dir,
    render_service,
    systemd_exec,
)
from tests.integration.support import clean_env

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
COMMAND = ["/opt/llama orch/bin/llama-orch"]


class Recorder:
    """A Runner that records the programs it was asked to run."""

    def __init__(self, answers: dict[str, tuple[int, str]] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = answers or {}

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(list(argv))
        return self.answers.get(" ".join(argv[:3]), (0, ""))


def installer(home: Path, run: Recorder | None = None) -> DesktopInstaller:
    paths = UserPaths.from_env({"HOME": str(home)})
    return DesktopInstaller(
        paths, home / ".config/llama-orch/config.toml", command=COMMAND, run=run or Recorder()
    )


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_install_writes_every_file_and_uninstall_removes_them_all(tmp_path: Path) -> None:
    inst = installer(tmp_path)

    written = inst.install(autostart=True)

    expected = {
        tmp_path / ".local/share/applications/llama-orch.desktop",
        tmp_path / ".local/share/icons/hicolor/scalable/apps/llama-orch.svg",
        *(tmp_path / f".local/share/icons/hicolor/{n}x{n}/apps/llama-orch.png" for n in ICON_SIZES),
        tmp_path / ".config/systemd/user/llama-orch.service",
        tmp_path / ".config/autostart/llama-orch.desktop",
    }
    assert set(written) == expected
    assert files_under(tmp_path) == expected
    for n in ICON_SIZES:
        png = tmp_path / f".local/share/icons/hicolor/{n}x{n}/apps/llama-orch.png"
        assert png.read_bytes() == (PACKAGING / f"icons/llama-orch-{n}.png").read_bytes()

    removed = inst.uninstall()

    assert set(removed) == expected
    assert files_under(tmp_path) == set()


def test_the_installed_entries_run_this_installation(tmp_path: Path) -> None:
    inst = installer(tmp_path)
    inst.install(autostart=True)

    entry = (tmp_path / ".local/share/applications/llama-orch.desktop").read_text()
    autostart = (tmp_path / ".config/autostart/llama-orch.desktop").read_text()
    unit = (tmp_path / ".config/systemd/user/llama-orch.service").read_text()

    assert 'Exec="/opt/llama orch/bin/llama-orch" gui\n' in entry
    assert 'Exec="/opt/llama orch/bin/llama-orch" serve\n' in entry
    assert "TryExec=/opt/llama orch/bin/llama-orch\n" in entry
    assert "StartupWMClass=llama-orch\n" in entry and "Icon=llama-orch\n" in entry
    assert 'Exec="/opt/llama orch/bin/llama-orch" gui --minimized\n' in autostart
    config = tmp_path / ".config/llama-orch/config.toml"
    assert f'ExecStart="/opt/llama orch/bin/llama-orch" serve --config {config}\n' in unit
    assert "Restart=on-failure\n" in unit


def test_exec_values_are_quoted_and_escaped() -> None:
    assert desktop_exec(["/usr/bin/llama-orch", "gui"]) == "/usr/bin/llama-orch gui"
    assert desktop_exec(['/a b/x"y', "100%"]) == '"/a b/x\\\\"y" 100%%'
    assert systemd_exec(["/a b/x", "50%", "$HOME"]) == '"/a b/x" 50%% $$HOME'


def test_uninstall_disables_an_enabled_service_first(tmp_path: Path) -> None:
    run = Recorder()
    inst = installer(tmp_path, run)
    inst.install()
    inst.paths.service_wanted.parent.mkdir(parents=True)
    inst.paths.service_wanted.symlink_to(inst.paths.service)
    assert inst.service_enabled()

    inst.uninstall()

    assert ["systemctl", "--user", "disable", "llama-orch.service"] in run.calls
    assert not inst.paths.service_wanted.is_symlink()


def test_login_switches_write_and_remove_their_files(tmp_path: Path) -> None:
    run = Recorder()
    inst = installer(tmp_path, run)

    inst.set_autostart(True)
    assert inst.autostart_enabled()
    inst.set_autostart(False)
    assert not inst.autostart_enabled()

    said = inst.set_service(True)
    assert inst.paths.service.is_file()
    assert ["systemctl", "--user", "enable", "llama-orch.service"] in run.calls
    assert "next login" in said


def test_a_refused_systemctl_is_one_sentence(tmp_path: Path) -> None:
    refusal = (1, "Failed to connect to bus: No medium found")
    inst = installer(tmp_path, Recorder({"systemctl --user enable": refusal}))

    with pytest.raises(OSError, match=r"^Could not enable the user service: Failed to connect"):
        inst.set_service(True)
    missing = installer(tmp_path, Recorder({"systemctl --user enable": (127, "")}))
    with pytest.raises(OSError, match="systemctl is not installed"):
        missing.set_service(True)


def test_packaging_dir_is_the_checkout_folder() -> None:
    assert packaging_dir() == PACKAGING


@pytest.mark.skipif(
    shutil.which("desktop-file-validate") is None,
    reason="desktop-file-validate is missing (apt-get install desktop-file-utils)",
)
def test_the_desktop_entries_validate(tmp_path: Path) -> None:
    inst = installer(tmp_path)
    inst.install(autostart=True)
    files = [
        PACKAGING / "llama-orch.desktop",
        PACKAGING / "llama-orch-autostart.desktop",
        inst.paths.desktop_entry,
        inst.paths.autostart,
    ]
    done = subprocess.run(
        ["desktop-file-validate", *map(str, files)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is missing")
def test_the_user_unit_verifies(tmp_path: Path) -> None:
    unit = tmp_path / "units/llama-orch.service"
    unit.parent.mkdir()
    template = (PACKAGING / "llama-orch.service").read_text()
    unit.write_text(render_service(template, [sys.executable, "-m", "app"], tmp_path / "c.toml"))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}

    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    broken = unit.read_text().replace(sys.executable, "/nonexistent/llama-orch")
    unit.write_text(broken)
    again = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert again.returncode != 0


def test_install_desktop_command_into_a_temporary_home(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    run = [sys.executable, "-m", "app", "install-desktop"]

    done = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, text=True, check=False)

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data/applications/llama-orch.desktop").is_file()
    assert (tmp_path / "config/systemd/user/llama-orch.service").is_file()
    assert not (tmp_path / "config/autostart/llama-orch.desktop").exists()
    assert "applications menu" in done.stdout
    gone = subprocess.run(
        [*run, "--uninstall"], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert gone.returncode == 0, gone.stderr
    ours = {p for p in files_under(tmp_path) if "llama-orch" in p.name}
    assert ours == set()
