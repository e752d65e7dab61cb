"""Start-up errors in GUI mode: the same sentence on stderr and in a dialog.

A launcher click has no terminal, so a config typo or a port in use must be
shown in a window; a terminal user sees the same text on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication, QMessageBox

TITLE = "llama-orch could not start"
HEADLESS_PLATFORMS = frozenset({"offscreen", "minimal"})


def critical_box(message: str) -> None:
    """Show ``message`` in a modal error box; blocks until it is closed. Does nothing
    on a platform without a screen (offscreen, minimal), where nobody could close it."""
    if QGuiApplication.platformName() in HEADLESS_PLATFORMS:
        return
    QMessageBox.critical(None, TITLE, message)


def report_start_error(message: str, show: Callable[[str], None] = critical_box) -> None:
    """Print ``message`` on stderr, then show it with ``show`` (a QApplication is
    created when none exists). Blocks while the dialog is open."""
    print(message, file=sys.stderr, flush=True)
    if QApplication.instance() is None:
        QApplication(sys.argv[:1])
    show(message)
