"""The bar under a chat's transcript that explains the last problem in one sentence,
offers the button that fixes it, and keeps the code behind a "Details" toggle."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.ui.error_text import ACTION_LABELS, Action, Explained
from app.ui.icons import RED


class ErrorBar(QFrame):
    """Hidden until ``show_error``; emits ``actionRequested(action, pool_id)``.

    ``show_offer`` shows a sentence with up to two plain actions (no details), used
    for the context-cut note.
    """

    actionRequested = Signal(str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(QPalette.ColorRole.ToolTipBase)
        self.setAccessibleName("Problem")
        self.sentence = QLabel()
        self.sentence.setWordWrap(True)
        self.sentence.setStyleSheet(f"color: {RED}; font-weight: 600")
        self.action_button = QPushButton()
        self.second_button = QPushButton()
        self.details_button = QPushButton("Details")
        self.details_button.setCheckable(True)
        self.details_button.setFlat(True)
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setVisible(False)
        self.close_button = QPushButton("✕")
        self.close_button.setFlat(True)
        self.close_button.setAccessibleName("Hide the problem")
        self.close_button.clicked.connect(self.hide)
        self.details_button.toggled.connect(self.details.setVisible)
        self.action_button.clicked.connect(lambda: self._emit(self._actions[0]))
        self.second_button.clicked.connect(lambda: self._emit(self._actions[1]))
        self._actions: list[Action] = []
        self._pool = ""
        row = QHBoxLayout()
        row.addWidget(self.sentence, 1)
        for button in (self.action_button, self.second_button, self.details_button):
            row.addWidget(button)
        row.addWidget(self.close_button)
        box = QVBoxLayout(self)
        box.setContentsMargins(8, 4, 8, 4)
        box.addLayout(row)
        box.addWidget(self.details)
        self.setVisible(False)

    def show_error(self, explained: Explained) -> None:
        """Show the sentence, its action button (if any) and the hidden details."""
        self._pool = explained.pool_id or ""
        self._set(explained.sentence, [explained.action] if explained.action else [])
        self.details.setText(explained.details)
        self.details_button.setChecked(False)
        self.details_button.setVisible(True)
        self.details.setVisible(False)

    def show_offer(self, sentence: str, actions: list[Action]) -> None:
        """Show a sentence with up to two action buttons and no details."""
        self._pool = ""
        self._set(sentence, actions[:2])
        self.details_button.setVisible(False)
        self.details.setVisible(False)

    def _set(self, sentence: str, actions: list[Action]) -> None:
        self._actions = actions
        self.sentence.setText(sentence)
        for button, action in zip(
            (self.action_button, self.second_button), [*actions, None, None], strict=False
        ):
            button.setVisible(action is not None)
            if action is not None:
                button.setText(ACTION_LABELS[action])
        self.setVisible(True)

    def _emit(self, action: Action) -> None:
        self.hide()
        self.actionRequested.emit(action.value, self._pool)
