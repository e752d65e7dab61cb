"""The chat transcript: a read-only rich-text view with coalesced token appends.

Tokens go into a ``str`` buffer (``add``) and reach the document with a single
``QTextCursor`` insert per timer tick (``flush``), never one insert per token.
Finished messages are rendered from Markdown once; the live answer is plain text
until it ends (``end_answer``), when only that answer is rendered as Markdown.
A hidden transcript (a chat tab that is not the current one, or the window hidden
to the tray) keeps buffering but stops its timer, and writes everything buffered
once when it is shown again.
"""

from __future__ import annotations

import html

from PySide6.QtCore import QTimer, QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QFontDatabase,
    QHideEvent,
    QShowEvent,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
)
from PySide6.QtGui import QTextFormat as Fmt
from PySide6.QtWidgets import QTextBrowser, QWidget

from app.ui.icons import GREY, RED

CODE_BACKGROUND = QColor(127, 135, 144, 40)

FLUSH_MS = 25


class Transcript(QTextBrowser):
    """Transcript of one conversation. ``flushes`` counts document inserts of tokens;
    ``renders`` counts Markdown renders (one per finished message). A click on an
    in-transcript link ("copy:3") emits ``linkClicked("copy:3")``. ``pendingChanged``
    emits True when a hidden transcript first receives text, False when it is shown."""

    linkClicked = Signal(str)
    pendingChanged = Signal(bool)

    def __init__(self, parent: QWidget | None = None, *, flush_ms: int = FLUSH_MS) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(False)
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._on_anchor)
        self.setAccessibleName("Conversation transcript")
        self.flushes = 0
        self.renders = 0
        self._live_start: int | None = None
        self._buffer: list[str] = []
        self._streaming = False
        self._hidden = False
        self._pending = False
        self._timer = QTimer(self)
        self._timer.setInterval(flush_ms)
        self._timer.timeout.connect(self.flush)

    def start_stream(self) -> None:
        """Start the flush timer (call when an answer begins); a hidden transcript
        starts it when it is shown."""
        self._streaming = True
        if not self._hidden:
            self._timer.start()

    def stop_stream(self) -> None:
        """Flush what is buffered and stop the timer."""
        self._streaming = False
        self.flush()
        self._timer.stop()

    def add(self, text: str) -> None:
        """Buffer token text; it appears at the next flush. Never touches the document."""
        self._buffer.append(text)
        if self._hidden and not self._pending:
            self._pending = True
            self.pendingChanged.emit(True)

    def showEvent(self, event: QShowEvent) -> None:
        """Write what was buffered while hidden, once, and resume the timer."""
        super().showEvent(event)
        self._hidden = False
        self.flush()
        if self._streaming:
            self._timer.start()
        if self._pending:
            self._pending = False
            self.pendingChanged.emit(False)

    def hideEvent(self, event: QHideEvent) -> None:
        """Stop writing to the document while hidden (tokens keep buffering)."""
        super().hideEvent(event)
        self._hidden = True
        self._timer.stop()

    def flush(self) -> None:
        """Append the buffered text with one cursor insert (no-op when empty)."""
        if not self._buffer:
            return
        text, self._buffer = "".join(self._buffer), []
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text, QTextCharFormat())
        self.flushes += 1
        self.scroll_to_end()

    def scroll_to_end(self) -> None:
        """Show the end of the transcript now and again once the layout settles."""
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())
        QTimer.singleShot(0, lambda: bar.setValue(bar.maximum()))

    def markdown(self, text: str) -> None:
        """Append ``text`` rendered from Markdown (code blocks shaded, monospace)."""
        cursor = self._end_block()
        start = cursor.position()
        cursor.insertMarkdown(text)
        self._shade_code(start)
        self.renders += 1
        self.scroll_to_end()

    def begin_answer(self) -> None:
        """Start the live answer's paragraph; tokens flushed from now on belong to it."""
        self._live_start = self._end_block().position()

    def end_answer(self, text: str) -> None:
        """Replace the live answer's plain text with ``text`` rendered once from Markdown."""
        self.flush()
        if self._live_start is None:
            return
        cursor = QTextCursor(self.document())
        cursor.setPosition(self._live_start)
        cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        cursor.removeSelectedText()
        cursor.setCharFormat(QTextCharFormat())
        cursor.setBlockFormat(QTextBlockFormat())
        start, self._live_start = cursor.position(), None
        cursor.insertMarkdown(text)
        self._shade_code(start)
        self.renders += 1

    def _shade_code(self, start: int) -> None:
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        block = self.document().findBlock(start)
        while block.isValid():
            if block.blockFormat().hasProperty(Fmt.Property.BlockCodeFence):
                cursor = QTextCursor(block)
                fmt = block.blockFormat()
                fmt.setBackground(CODE_BACKGROUND)
                cursor.setBlockFormat(fmt)
                cursor.select(QTextCursor.SelectionType.BlockUnderCursor)
                chars = QTextCharFormat()
                chars.setFont(mono)
                cursor.mergeCharFormat(chars)
            block = block.next()

    def _on_anchor(self, url: QUrl) -> None:
        self.linkClicked.emit(url.toString())

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
        cursor.setBlockFormat(QTextBlockFormat())
        cursor.setCharFormat(QTextCharFormat())
        return cursor
