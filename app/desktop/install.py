"""Installing the desktop integration for the current user (no root).

The templates live in ``packaging/`` (a checkout) or in the bundle's
``packaging`` folder: the desktop entry, the hicolor icons, the systemd user
unit and the XDG autostart entry. Installing rewrites their ``Exec=`` /
``TryExec=`` / ``ExecStart=`` lines with the absolute command of this
installation and writes each file atomically under the XDG folders. No Qt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.config.files import atomic_write
from app.config.schema import xdg_dir

APP_ID = "llama-orch"
DESKTOP_FILE = f"{APP_ID}.desktop"
SERVICE_FILE = f"{APP_ID}.service"
AUTOSTART_TEMPLATE = f"{APP_ID}-autostart.desktop"
ICON_SIZES = (16, 22, 24, 32, 48, 64, 128, 256)

Runner = Callable[[Sequence[str]], tuple[int, str]]
"""Run a program; return (exit code, output). Exit 127 when it is not installed."""


def run_program(argv: Sequence[str]) -> tuple[int, str]:
    """Run ``argv`` with a 30 s limit; return (exit code, combined output). Blocks."""
    if shutil.which(argv[0]) is None:
        return 127, f"{argv[0]} is not installed"
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


def packaging_dir() -> Path:
    """Return the folder holding the packaging templates (bundle or checkout).

    Raises FileNotFoundError with a sentence when neither exists.
    """
    bundled = getattr(sys, "_MEIPASS", None)
    candidates = [Path(bundled) / "packaging"] if bundled else []
    candidates.append(Path(__file__).resolve().parents[2] / "packaging")
    for folder in candidates:
        if (folder / DESKTOP_FILE).is_file():
            return folder
    raise FileNotFoundError(
        "the desktop files are not part of this installation; run install-desktop "
        "from a llama-orch checkout or from the bundle built by `make package`"
    )


def launcher_command() -> list[str]:
    """Return the absolute command that starts this installation of llama-orch."""
    if getattr(sys, "frozen", False):
        return [str(Path(sys.executable).resolve())]
    script = Path(sys.executable).parent / APP_ID
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which(APP_ID)
    return [found] if found else [sys.executable, "-m", "app"]


@dataclass(frozen=True)
class UserPaths:
    """Where the per-user desktop files go (XDG base directories)."""

    data_home: Path
    config_home: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> UserPaths:
        """Return the paths for ``env`` ($XDG_DATA_HOME, $XDG_CONFIG_HOME, $HOME)."""
        return cls(
            data_home=xdg_dir(env, "XDG_DATA_HOME", ".local/share"),
            config_home=xdg_dir(env, "XDG_CONFIG_HOME", ".config"),
        )

    @property
    def desktop_entry(self) -> Path:
        return self.data_home / "applications" / DESKTOP_FILE

    @property
    def icon_root(self) -> Path:
        return self.data_home / "icons" / "hicolor"

    def icons(self) -> list[Path]:
        """Return the icon files: the scalable SVG and one PNG per size."""
        svg = self.icon_root / "scalable" / "apps" / f"{APP_ID}.svg"
        pngs = [self.icon_root / f"{n}x{n}" / "apps" / f"{APP_ID}.png" for n in ICON_SIZES]
        return [svg, *pngs]

    @property
    def service(self) -> Path:
        return self.config_home / "systemd" / "user" / SERVICE_FILE

    @property
    def service_wanted(self) -> Path:
        """The symlink ``systemctl --user enable`` creates."""
        return self.config_home / "systemd" / "user" / "default.target.wants" / SERVICE_FILE

    @property
    def autostart(self) -> Path:
        return self.config_home / "autostart" / DESKTOP_FILE


# ---- rendering (pure) ----------------------------------------------------------------


def desktop_exec(argv: Sequence[str]) -> str:
    """Return ``argv`` as a desktop-entry Exec value (quoted per the spec). Pure."""
    return " ".join(_desktop_arg(arg) for arg in argv)


def _desktop_arg(arg: str) -> str:
    quoted = arg
    if any(c in " \t\n\"'\\><~|&;$*?#()`" for c in arg):
        quoted = '"' + "".join("\\" + c if c in '"`$\\' else c for c in arg) + '"'
    return quoted.replace("%", "%%").replace("\\", "\\\\")


def systemd_exec(argv: Sequence[str]) -> str:
    """Return ``argv`` as a systemd ExecStart value (quoted, % and $ escaped). Pure."""
    return " ".join(_systemd_arg(arg) for arg in argv)


def _systemd_arg(arg: str) -> str:
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in escaped):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def render_entry(template: str, command: Sequence[str]) -> str:
    """Return a desktop entry with ``llama-orch`` in Exec/TryExec replaced by ``command``."""
    return "\n".join(_entry_line(line, command) for line in template.splitlines()) + "\n"


def _entry_line(line: str, command: Sequence[str]) -> str:
    key, sep, value = line.partition("=")
    if sep and key == "TryExec":
        return f"TryExec={command[0]}"
    words = value.split(" ")
    if sep and key == "Exec" and words[0] == APP_ID:
        return f"Exec={desktop_exec([*command, *words[1:]])}"
    return line


def render_service(template: str, command: Sequence[str], config: Path) -> str:
    """Return the user unit running ``command serve --config config``. Pure."""
    exec_start = "ExecStart=" + systemd_exec([*command, "serve", "--config", str(config)])
    lines = [exec_start if ln.startswith("ExecStart=") else ln for ln in template.splitlines()]
    return "\n".join(lines) + "\n"


# ---- the installer -------------------------------------------------------------------


class DesktopInstaller:
    """Writes and removes the per-user desktop files. Every method blocks (disk)."""

    def __init__(
        self,
        paths: UserPaths,
        config: Path,
        *,
        command: Sequence[str] | None = None,
        templates: Path | None = None,
        run: Runner = run_program,
    ) -> None:
        self.paths = paths
        self.config = config
        self.command = list(command) if command else launcher_command()
        self._templates = templates
        self._run = run

    @property
    def templates(self) -> Path:
        if self._templates is None:
            self._templates = packaging_dir()
        return self._templates

    def install(self, *, autostart: bool = False) -> list[Path]:
        """Write the menu entry, icons and user unit (and the autostart entry when
        asked); return the files written. Raises OSError, FileNotFoundError."""
        written = [self._write_entry(), *self._write_icons(), self.write_service()]
        if autostart:
            written.append(self.set_autostart(True))
        self._run(["update-desktop-database", str(self.paths.desktop_entry.parent)])
        return written

    def uninstall(self) -> list[Path]:
        """Disable the user service and remove every file ``install`` writes; return
        the files removed. Raises OSError."""
        if self.service_enabled():
            self.set_service(False)
        removed = []
        for path in [self.paths.desktop_entry, *self.paths.icons(), self.paths.service,
                     self.paths.service_wanted, self.paths.autostart]:  # fmt: skip
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(path)
        self._run(["systemctl", "--user", "daemon-reload"])
        self._run(["update-desktop-database", str(self.paths.desktop_entry.parent)])
        return removed

    def _write_entry(self) -> Path:
        text = (self.templates / DESKTOP_FILE).read_text(encoding="utf-8")
        return _put(self.paths.desktop_entry, render_entry(text, self.command).encode())

    def _write_icons(self) -> list[Path]:
        icons = self.templates / "icons"
        sources = [icons / f"{APP_ID}.svg", *(icons / f"{APP_ID}-{n}.png" for n in ICON_SIZES)]
        return [
            _put(dst, src.read_bytes())
            for src, dst in zip(sources, self.paths.icons(), strict=True)
        ]

    def write_service(self) -> Path:
        """Write the systemd user unit; return its path. Raises OSError."""
        text = (self.templates / SERVICE_FILE).read_text(encoding="utf-8")
        path = _put(self.paths.service, render_service(text, self.command, self.config).encode())
        self._run(["systemctl", "--user", "daemon-reload"])
        return path

    # ---- the two login switches (Settings) ------------------------------------------

    def autostart_enabled(self) -> bool:
        """Return True when the XDG autostart entry exists."""
        return self.paths.autostart.is_file()

    def set_autostart(self, on: bool) -> Path:
        """Write (``on``) or remove the autostart entry; return its path. Raises OSError."""
        path = self.paths.autostart
        if not on:
            path.unlink(missing_ok=True)
            return path
        text = (self.templates / AUTOSTART_TEMPLATE).read_text(encoding="utf-8")
        return _put(path, render_entry(text, self.command).encode())

    def service_enabled(self) -> bool:
        """Return True when the user unit is enabled (its default.target link exists)."""
        return self.paths.service_wanted.is_symlink() or self.paths.service_wanted.exists()

    def set_service(self, on: bool) -> str:
        """Enable (write the unit first) or disable the user service; return a sentence
        saying what happened. Raises OSError when systemctl refuses, with its reason."""
        if on:
            self.write_service()
        code, output = self._run(
            ["systemctl", "--user", "enable" if on else "disable", SERVICE_FILE]
        )
        if code != 0:
            raise OSError(service_failure(on, code, output))
        if on:
            return (
                "The server runs as a user service from your next login; start it now with "
                f"`systemctl --user start {SERVICE_FILE}` after quitting this window."
            )
        self._run(["systemctl", "--user", "stop", SERVICE_FILE])
        return "The user service is disabled and stopped."


def service_failure(on: bool, code: int, output: str) -> str:
    """Return the sentence for a failed ``systemctl --user enable/disable``. Pure."""
    what = "enable" if on else "disable"
    if code == 127:
        return f"Could not {what} the user service: systemctl is not installed (no systemd)."
    detail = output.splitlines()[-1] if output else f"exit code {code}"
    return f"Could not {what} the user service: {detail} (is a systemd user session running?)."


def _put(path: Path, data: bytes) -> Path:
    atomic_write(path, data)
    path.chmod(0o644)
    return path
