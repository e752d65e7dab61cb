"""The chat transcript: a read-only rich-text view with coalesced token appends.

Tokens go into a ``str`` buffer (``add``) and reach the document with a single
``QTextCursor`` insert per timer tick (``flush``), never one insert per token.
"""

from __future__ import annotations

import html

from PySide6.QtCore import QTimer
from PySide6.QtGui import QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QTextBrowser, QWidget

from app.ui.icons import GREY, RED

FLUSH_MS = 25


class Transcript(QTextBrowser):
    """Transcript of one conversation. ``flushes`` counts document inserts of tokens."""

    def __init__(self, parent: QWidget | None = None, *, flush_ms: int = FLUSH_MS) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(False)
        self.setAccessibleName("Conversation transcript")
        self.flushes = 0
        self._buffer: list[str] = []
        self._timer = QTimer(self)
        self._timer.setInterval(flush_ms)
        self._timer.timeout.connect(self.flush)

    def start_stream(self) -> None:
        """Start the flush timer (call when an answer begins)."""
        self._timer.start()

    def stop_stream(self) -> None:
        """Flush what is buffered and stop the timer."""
        self.flush()
        self._timer.stop()

    def add(self, text: str) -> None:
        """Buffer token text; it appears at the next flush. Never touches the document."""
        self._buffer.append(text)

    def flush(self) -> None:
        """Append the buffered text with one cursor insert (no-op when empty)."""
        if not self._buffer:
            return
        text, self._buffer = "".join(self._buffer), []
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text, QTextCharFormat())
        self.flushes += 1
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def append_html(self, fragment: str) -> None:
        """Append ``fragment`` (trusted HTML) as a new paragraph."""
        self._end_block().insertHtml(fragment)

    def append_text(self, text: str) -> None:
        """Append plain ``text`` as a new paragraph in the default format."""
        self._end_block().insertText(text, QTextCharFormat())

    def muted(self, text: str) -> None:
        """Append ``text`` as a grey paragraph (stats, decisions)."""
        self.append_html(f"<span style='color:{GREY}'>{html.escape(text)}</span>")

    def notice(self, text: str, *, error: bool = False) -> None:
        """Append a one-line notice, red for errors."""
        colour = RED if error else GREY
        self.append_html(f"<span style='color:{colour}'>{html.escape(text)}</span>")

    def _end_block(self) -> QTextCursor:
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        if not self.document().isEmpty():
            cursor.insertBlock()
        cursor.setCharFormat(QTextCharFormat())
        return cursor
