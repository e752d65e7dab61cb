"""``llama-orch --version`` and ``llama-orch install-desktop [--uninstall]``.

Part of the composition root: reads the engine and NVML versions through
app.engine_host (lazily), never imports Qt widgets.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

from app.desktop.about import VersionFacts, app_version, version_lines
from app.desktop.install import DesktopInstaller, UserPaths


def engine_versions(binary: str | None = None) -> list[str]:
    """Return the llama.cpp engine this installation runs (llama-server configured,
    on PATH or installed by the set-up), or []. Blocks (runs ``llama-server --version``)."""
    from app.engine_host.llamacpp_launch import llama_server_version, locate_llama_server

    server = locate_llama_server(binary)
    return [asyncio.run(llama_server_version(server))] if server else []


def qt_version() -> str | None:
    """Return "6.x.y (PySide6 6.x.y)", or None when PySide6 is missing. Loads QtCore only."""
    try:
        import PySide6
        from PySide6.QtCore import qVersion
    except ImportError:
        return None
    return f"{qVersion()} (PySide6 {PySide6.__version__})"


def collect_facts() -> VersionFacts:
    """Return the facts for the version report. Blocks (NVML, engine --version)."""
    from app.engine_host.nvml import NvmlInventory

    inventory = NvmlInventory()
    try:
        gpu = inventory.read(with_processes=False)
    finally:
        inventory.close()
    return VersionFacts(
        app=app_version(),
        engines=engine_versions(),
        qt=qt_version(),
        driver=gpu.driver_version,
        cuda=gpu.cuda_version,
    )


def cmd_version(out: TextIO = sys.stdout) -> int:
    """Print the version report; returns 0."""
    print("\n".join(version_lines(collect_facts())), file=out)
    return 0


def cmd_install_desktop(
    config: Path, *, uninstall: bool, autostart: bool, out: TextIO = sys.stdout
) -> int:
    """Install (or remove) the menu entry, icons, user unit and autostart entry for
    the current user. Returns 0, or 1 with one sentence on stderr. Blocks (disk)."""
    installer = DesktopInstaller(UserPaths.from_env(), config)
    try:
        files = installer.uninstall() if uninstall else installer.install(autostart=autostart)
    except (OSError, FileNotFoundError) as exc:
        what = "remove" if uninstall else "install"
        print(
            f"llama-orch install-desktop: cannot {what} the desktop files: {exc}", file=sys.stderr
        )
        return 1
    verb = "removed" if uninstall else "wrote"
    for path in files:
        print(f"{verb} {path}", file=out)
    if not uninstall:
        print(
            "llama-orch is in your applications menu; run the server as a user service with "
            "`systemctl --user enable --now llama-orch.service`.",
            file=out,
        )
    elif not files:
        print("nothing to remove: the desktop files were not installed", file=out)
    return 0
