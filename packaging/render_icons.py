"""Render packaging/icons/llama-orch.svg to the hicolor PNG sizes (run after editing the SVG).

    QT_QPA_PLATFORM=offscreen python packaging/render_icons.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

SIZES = (16, 22, 24, 32, 48, 64, 128, 256)
ICONS = Path(__file__).resolve().parent / "icons"


def main() -> int:
    """Write llama-orch-<size>.png next to the SVG; returns 0."""
    _app = QGuiApplication(sys.argv)
    renderer = QSvgRenderer(str(ICONS / "llama-orch.svg"))
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        image.save(str(ICONS / f"llama-orch-{size}.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
