"""Status colours and icons drawn with QPainter (no image files needed).

The accent colours are mid-tone so that white text on them, and the colours on
either a light or a dark window background, stay readable.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPen, QPixmap

from app.orchestrator.lifecycle import PoolState

GREY = "#7f8790"
GREEN = "#2e8b4e"
AMBER = "#c27c0e"
RED = "#c0392b"
BLUE = "#2f6fb5"
PURPLE = "#7b4fb8"

_STATE_COLOURS: dict[str, str] = {
    PoolState.READY: GREEN,
    PoolState.STARTING: BLUE,
    PoolState.DRAINING: AMBER,
    PoolState.STOPPING: AMBER,
    PoolState.NEEDS_MODEL: AMBER,
    PoolState.FAILED: RED,
    PoolState.STOPPED: GREY,
    "demo": PURPLE,
    "idle": GREY,
    "busy": GREEN,
    "degraded": AMBER,
}


def state_colour(state: str) -> QColor:
    """Return the accent colour for a pool or tray state (grey when unknown)."""
    return QColor(_STATE_COLOURS.get(state, GREY))


def badge_stylesheet(colour: QColor) -> str:
    """Return a stylesheet for a small rounded badge label on ``colour``."""
    return (
        f"QLabel {{ background-color: {colour.name()}; color: white; "
        "border-radius: 4px; padding: 1px 6px; font-weight: bold; }"
    )


def dot_pixmap(colour: QColor, size: int = 32) -> QPixmap:
    """Return a filled circle of ``colour`` with a darker rim on a transparent square."""
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    pen = QPen(colour.darker(150))
    pen.setWidthF(max(1.0, size / 16))
    painter.setPen(pen)
    painter.setBrush(QBrush(colour))
    margin = size / 8
    painter.drawEllipse(QRectF(margin, margin, size - 2 * margin, size - 2 * margin))
    painter.end()
    return pix


def status_icon(state: str) -> QIcon:
    """Return a round status icon for ``state`` at a few sizes (tray and menus)."""
    icon = QIcon()
    for size in (16, 22, 32, 64):
        icon.addPixmap(dot_pixmap(state_colour(state), size))
    return icon


def app_icon() -> QIcon:
    """Return the application icon: a green status dot with a white stream mark."""
    icon = QIcon()
    for size in (32, 64, 128):
        pix = dot_pixmap(QColor(GREEN), size)
        painter = QPainter(pix)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        pen = QPen(QColor("white"))
        pen.setWidthF(size / 12)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        painter.setPen(pen)
        for i, length in enumerate((0.45, 0.3, 0.38)):
            y = size * (0.38 + 0.12 * i)
            painter.drawLine(int(size * 0.3), int(y), int(size * (0.3 + length)), int(y))
        painter.end()
        icon.addPixmap(pix)
    return icon
