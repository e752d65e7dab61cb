"""Status colours and icons drawn with QPainter (no image files needed).

The accent colours are mid-tone so that white text on them, and the colours on
either a light or a dark window background, stay readable.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
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


TRAY_COLOURS = {"idle": BLUE, "busy": GREEN, "degraded": AMBER, "failed": RED}


def tray_icon(state: str) -> QIcon:
    """Return the branded tray icon for a tray state: the stream mark on a rounded
    square, blue when idle, green when busy; degraded adds an amber "!" badge and
    failed a red cross badge, so the states differ in shape as well as colour."""
    icon = QIcon()
    for size in (16, 22, 32, 64):
        icon.addPixmap(_tray_pixmap(state, size))
    return icon


def _tray_pixmap(state: str, size: int) -> QPixmap:
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    base = QColor(GREEN if state == "busy" else BLUE)
    painter.setPen(QPen(base.darker(140), max(1.0, size / 20)))
    painter.setBrush(QBrush(base))
    painter.drawRoundedRect(QRectF(1, 1, size - 2, size - 2), size / 5, size / 5)
    pen = QPen(QColor("white"), size / 10)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    painter.setPen(pen)
    for i, length in enumerate((0.5, 0.32, 0.42)):
        y = size * (0.3 + 0.2 * i)
        painter.drawLine(QPointF(size * 0.22, y), QPointF(size * (0.22 + length), y))
    if state in ("degraded", "failed"):
        _badge(painter, size, QColor(TRAY_COLOURS[state]), "!" if state == "degraded" else "\u00d7")
    painter.end()
    return pix


def _badge(painter: QPainter, size: int, colour: QColor, mark: str) -> None:
    radius = size * 0.26
    centre = QPointF(size - radius - 0.5, size - radius - 0.5)
    painter.setPen(QPen(QColor("white"), max(1.0, size / 24)))
    painter.setBrush(QBrush(colour))
    painter.drawEllipse(centre, radius, radius)
    font = painter.font()
    font.setBold(True)
    font.setPixelSize(max(6, int(radius * 1.6)))
    painter.setFont(font)
    box = QRectF(centre.x() - radius, centre.y() - radius, 2 * radius, 2 * radius)
    painter.drawText(box, Qt.AlignmentFlag.AlignCenter, mark)
