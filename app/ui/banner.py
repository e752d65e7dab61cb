"""A dismissible information banner shown above the window's tabs."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget


class Banner(QFrame):
    """One wrapped line of text with a "Dismiss" button; hides itself when dismissed.

    Colours come from the palette's tooltip roles, so it follows light and dark themes.
    """

    actionClicked = Signal()
    """The optional action button (e.g. "Get a model") was clicked."""

    def __init__(
        self, text: str, parent: QWidget | None = None, *, action: str | None = None
    ) -> None:
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
        self.action_button = QPushButton(action) if action else None
        if self.action_button is not None:
            self.action_button.clicked.connect(self.actionClicked)
            box.addWidget(self.action_button)
        box.addWidget(self.dismiss_button)
        self.setAccessibleName("Notice")
        self.setAccessibleDescription(text)
