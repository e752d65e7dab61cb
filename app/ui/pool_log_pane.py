"""The engine log pane of the Pools tab: follows one pool's engine output.

``PoolLogPane`` asks the bridge for the last lines of the chosen pool's engine
log about once a second while it is visible, shows them in a read-only
monospace box, and offers "Copy" and "Open log file". The file opener is
injectable so tests open nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.ui.bridge import Bridge

TAIL_LINES = 300
POLL_MS = 1000
FileOpener = Callable[[str], None]


def open_file(path: str) -> None:
    """Open ``path`` with the desktop's default application. Never blocks."""
    QDesktopServices.openUrl(QUrl.fromLocalFile(path))


class PoolLogPane(QWidget):
    """Engine log of one pool, refreshed while shown."""

    def __init__(
        self, bridge: Bridge, parent: QWidget | None = None, *, opener: FileOpener | None = None
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._open = opener or open_file
        self.log_file: str | None = None
        self._busy = False
        self.pool_box = QComboBox()
        self.pool_box.setAccessibleName("Pool whose engine log is shown")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(TAIL_LINES * 2)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setAccessibleName("Engine log")
        self.file_label = QLabel()
        self.copy_button = QPushButton("Copy")
        self.open_button = QPushButton("Open log file")
        self.copy_button.clicked.connect(self.copy)
        self.open_button.clicked.connect(self.open_log_file)
        self.pool_box.currentTextChanged.connect(lambda _t: self.refresh())
        self._layout()
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()

    def _layout(self) -> None:
        row = QHBoxLayout()
        row.addWidget(QLabel("Engine log of"))
        row.addWidget(self.pool_box)
        row.addWidget(self.file_label, 1)
        row.addWidget(self.copy_button)
        row.addWidget(self.open_button)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(row)
        box.addWidget(self.text, 1)

    def set_pools(self, pool_ids: Sequence[str]) -> None:
        """Offer ``pool_ids``; keeps the current choice when it still exists."""
        current = self.pool_box.currentText()
        if [self.pool_box.itemText(i) for i in range(self.pool_box.count())] == list(pool_ids):
            return
        self.pool_box.blockSignals(True)
        self.pool_box.clear()
        self.pool_box.addItems(list(pool_ids))
        if current in pool_ids:
            self.pool_box.setCurrentText(current)
        self.pool_box.blockSignals(False)
        self.refresh()

    def show_pool(self, pool_id: str) -> None:
        """Follow ``pool_id``'s engine log."""
        self.pool_box.setCurrentText(pool_id)

    def refresh(self) -> None:
        """Fetch the chosen pool's log tail unless hidden or already fetching."""
        pool_id = self.pool_box.currentText()
        if not pool_id or self._busy or not self.isVisible():
            return
        self._busy = True
        self._bridge.run(self._fetch(pool_id), "reading the engine log")

    async def _fetch(self, pool_id: str) -> None:
        try:
            log_file, lines = await self._bridge.pool_log(pool_id, TAIL_LINES)
        finally:
            self._busy = False
        if pool_id == self.pool_box.currentText():
            self.show_lines(log_file, lines)

    def show_lines(self, log_file: str | None, lines: Sequence[str]) -> None:
        """Show ``lines`` (oldest first), keeping the view at the end when it was there."""
        self.log_file = log_file
        self.file_label.setText(log_file or "this engine writes no log")
        self.open_button.setEnabled(log_file is not None)
        text = "\n".join(lines)
        if text == self.text.toPlainText():
            return
        bar = self.text.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        self.text.setPlainText(text)
        if at_end:
            bar.setValue(bar.maximum())

    def copy(self) -> None:
        """Put the shown log text on the clipboard."""
        QGuiApplication.clipboard().setText(self.text.toPlainText())

    def open_log_file(self) -> None:
        """Open the log file with the desktop's default application."""
        if self.log_file is not None:
            self._open(self.log_file)
