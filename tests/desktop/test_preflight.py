"""The check before Qt loads: missing xcb libraries give one sentence with package names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.desktop.preflight import XCB_LIBRARIES, missing_libraries, preflight, uses_xcb
from tests.integration.support import clean_env

ROOT = Path(__file__).resolve().parents[2]
X11 = {"DISPLAY": ":0", "XDG_SESSION_TYPE": "x11"}


def without(*sonames: str):  # type: ignore[no-untyped-def]
    return lambda name: name not in sonames


def test_a_missing_library_names_the_debian_and_fedora_packages() -> None:
    message = preflight(X11, probe=without("libxcb-cursor.so.0", "libxcb-icccm.so.4"))

    assert message is not None
    assert "libxcb-cursor.so.0, libxcb-icccm.so.4" in message
    assert "`sudo apt install libxcb-cursor0 libxcb-icccm4` (Debian/Ubuntu)" in message
    assert "`sudo dnf install xcb-util-cursor xcb-util-wm` (Fedora)" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    assert "Reinstalling" not in message


def test_packages_shared_by_several_libraries_are_named_once() -> None:
    message = preflight(X11, probe=without("libxcb-randr.so.0", "libxcb-shape.so.0"))

    assert message is not None
    assert "`sudo dnf install libxcb` (Fedora)" in message


def test_nothing_to_say_when_every_library_loads() -> None:
    assert preflight(X11, probe=lambda _name: True) is None
    assert missing_libraries(lambda _name: True) == []


def test_only_the_x11_platform_is_checked() -> None:
    assert uses_xcb({"XDG_SESSION_TYPE": "x11"})
    assert uses_xcb({"QT_QPA_PLATFORM": "xcb"})
    assert not uses_xcb({"QT_QPA_PLATFORM": "offscreen"})
    assert not uses_xcb({"WAYLAND_DISPLAY": "wayland-0"})
    assert preflight({"QT_QPA_PLATFORM": "offscreen"}, probe=lambda _name: False) is None


def test_every_library_has_both_package_names() -> None:
    for soname, (debian, fedora) in XCB_LIBRARIES.items():
        assert soname.startswith("lib") and ".so." in soname
        assert debian and fedora


def test_the_real_probe_finds_the_c_library() -> None:
    from app.desktop.preflight import can_load

    assert can_load("libc.so.6")
    assert not can_load("libllama-orch-does-not-exist.so.0")


def test_gui_without_the_libraries_exits_with_the_sentence(tmp_path: Path) -> None:
    """The real probe with the platform forced to xcb, on a machine that lacks one of
    the libraries (the injected-probe tests above cover every other machine)."""
    env = clean_env(tmp_path, QT_QPA_PLATFORM="xcb", DISPLAY=":99")
    missing = missing_libraries()
    if not missing:
        pytest.skip("every xcb library is installed here, so the real probe finds none missing")
    done = subprocess.run(
        [sys.executable, "-m", "app", "gui"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().startswith("The llama-orch window cannot open because")
    assert missing[0] in done.stderr
