"""The check that runs before Qt loads: can Qt's X11 (xcb) platform plugin start?

Without it, Qt aborts with "could not load the Qt platform plugin xcb …
Reinstalling the application may fix this problem", which helps nobody. This
module probes the system libraries the plugin links and returns one sentence
naming the Debian/Ubuntu and Fedora packages to install. No Qt imports.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

LibraryProbe = Callable[[str], bool]
"""Return True when the shared library (a soname such as "libxcb-cursor.so.0") loads."""

# soname -> (Debian/Ubuntu package, Fedora package)
XCB_LIBRARIES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
}


def can_load(soname: str) -> bool:
    """Return True when the dynamic loader finds ``soname`` (or the bundle ships it).

    Loads the library into this process. Blocks briefly (disk).
    """
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        bundled: str | None = getattr(sys, "_MEIPASS", None)
        return bundled is not None and (Path(bundled) / soname).exists()


def uses_xcb(env: Mapping[str, str]) -> bool:
    """Return True when Qt would pick its xcb plugin for ``env``. Pure."""
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(";")[0].split(":")[0] == "xcb"
    return not env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") != "wayland"


def missing_libraries(probe: LibraryProbe = can_load) -> list[str]:
    """Return the sonames of the xcb plugin's libraries that ``probe`` cannot load."""
    return [name for name in XCB_LIBRARIES if not probe(name)]


def missing_message(missing: list[str]) -> str:
    """Return the one-sentence fix for the ``missing`` sonames. Pure."""
    debian = " ".join(dict.fromkeys(XCB_LIBRARIES[m][0] for m in missing))
    fedora = " ".join(dict.fromkeys(XCB_LIBRARIES[m][1] for m in missing))
    return (
        f"The llama-orch window cannot open because the system libraries {', '.join(missing)} "
        f"are missing: install them with `sudo apt install {debian}` (Debian/Ubuntu) or "
        f"`sudo dnf install {fedora}` (Fedora), or run the server without a window with "
        "`llama-orch serve`."
    )


def preflight(env: Mapping[str, str] = os.environ, probe: LibraryProbe = can_load) -> str | None:
    """Return the sentence to print when the window cannot start here, else None.

    Only checks when Qt would use X11 (xcb); Wayland and offscreen need none of
    these libraries. Blocks briefly (loads libraries).
    """
    if not uses_xcb(env):
        return None
    missing = missing_libraries(probe)
    return missing_message(missing) if missing else None
