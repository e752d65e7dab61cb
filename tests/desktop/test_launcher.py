"""The installed menu entry starts the app: launched by `dex` under Xvfb, as a desktop
menu would, the window appears with the WM_CLASS the entry's StartupWMClass names."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app.desktop.install import DesktopInstaller, UserPaths
from app.desktop.preflight import missing_libraries
from tests.integration.support import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (shutil.which("Xvfb") and shutil.which("dex") and shutil.which("xwininfo")),
    reason="needs Xvfb, dex and xwininfo (apt-get install xvfb dex x11-utils)",
)


def test_dex_starts_the_installed_entry_under_xvfb(tmp_path: Path) -> None:
    if missing_libraries():
        pytest.skip(f"Qt's xcb plugin lacks {', '.join(missing_libraries())} here")
    port = free_port()
    config = tmp_path / ".config/llama-orch/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'[server]\nbind = "127.0.0.1:{port}"\n\n[[pools]]\nid = "m0"\nengine = "mock"\n'
        'model = "mock-a"\ndevice_mask = "0"\n'
    )
    installer = DesktopInstaller(
        UserPaths.from_env({"HOME": str(tmp_path)}), config,
        command=[sys.executable, "-m", "app"], run=lambda _argv: (0, ""),
    )  # fmt: skip
    installer.install()
    display = f":{90 + os.getpid() % 9}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x800x24"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    data_dirs = f"{tmp_path}/.local/share:/usr/share"
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "DISPLAY": display,
           "PYTHONPATH": str(ROOT), "XDG_DATA_DIRS": data_dirs}  # fmt: skip
    try:
        time.sleep(1)
        subprocess.run(["dex", str(installer.paths.desktop_entry)], env=env, check=True,
                       timeout=30, cwd=tmp_path)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/pools", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the launched app never served"
                time.sleep(0.25)
        tree = ""
        # WM_CLASS is (instance, class); the class is what StartupWMClass matches.
        while '"llama-orch")  1100x' not in tree and time.monotonic() < deadline:
            time.sleep(0.25)
            tree = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True,
                                  text=True, check=False).stdout  # fmt: skip
        assert re.search(r'"llama-orch": \("[^"]+" "llama-orch"\)', tree), tree
    finally:
        for pid in _launched_by_this_test(tmp_path):
            os.kill(pid, signal.SIGTERM)
        xvfb.terminate()
        xvfb.wait(timeout=10)


def _launched_by_this_test(home: Path) -> list[int]:
    """Return the pids of `-m app gui` processes whose HOME is ``home`` (ours only)."""
    found = []
    marker = f"HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-m app gui" in cmdline and marker in environ:
            found.append(int(entry.name))
    return found
