"""A dismissible information banner shown above the window's tabs."""

from __future__ import annotations

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget


class Banner(QFrame):
    """One wrapped line of text with a "Dismiss" button; hides itself when dismissed.

    Colours come from the palette's tooltip roles, so it follows light and dark themes.
    """

    def __init__(self, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(QPalette.ColorRole.ToolTipBase)
        self.setForegroundRole(QPalette.ColorRole.ToolTipText)
        self.label = QLabel(text)
        self.label.setWordWrap(True)
        self.label.setForegroundRole(QPalette.ColorRole.ToolTipText)
        self.dismiss_button = QPushButton("Dismiss")
        self.dismiss_button.setAccessibleName("Dismiss the banner")
        self.dismiss_button.clicked.connect(self.hide)
        box = QHBoxLayout(self)
        box.addWidget(self.label, 1)
        box.addWidget(self.dismiss_button)
        self.setAccessibleName("Notice")
        self.setAccessibleDescription(text)
