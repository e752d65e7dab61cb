"""A live tail of the JSON-lines log, filterable by task or correlation id.

``LogTailer`` reads the lines appended since its last call (following rotation
and truncation; BLOCKING, run it in an executor). ``LogTailView`` polls it about
once a second off the GUI thread, keeps the last ``MAX_LINES`` entries and
shows those matching the filter as ``time level message [job_id corr]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QVBoxLayout, QWidget

from app.ui.bridge import Bridge

MAX_LINES = 2000
FIRST_READ_BYTES = 1 << 20  # on open, look at most this far back
POLL_MS = 1000
_ID_FIELDS = ("job_id", "task_id", "correlation_id", "corr_id", "session_id")


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One log line, parsed; ``ids`` holds the id fields used by the filter."""

    ts: float | None
    level: str
    message: str
    job_id: str
    correlation_id: str
    ids: tuple[str, ...]

    def text(self) -> str:
        """Return the display form: ``time level message [job_id corr]``."""
        stamp = (
            "--:--:--" if self.ts is None else time.strftime("%H:%M:%S", time.localtime(self.ts))
        )
        tags = " ".join(t for t in (self.job_id[:8], self.correlation_id[:8]) if t)
        suffix = f" [{tags}]" if tags else ""
        return f"{stamp} {self.level.upper():<7} {self.message}{suffix}"

    def matches(self, needle: str) -> bool:
        """Return True when ``needle`` (case-insensitive) is part of one of the ids."""
        if not needle:
            return True
        lowered = needle.strip().lower()
        return any(lowered in ident.lower() for ident in self.ids)


def parse_line(line: str) -> LogEntry:
    """Return the entry of one JSON log line; a non-JSON line becomes its own message."""
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return LogEntry(None, "", line.rstrip(), "", "", ())
    ts = data.get("ts")
    ids = tuple(str(data[k]) for k in _ID_FIELDS if data.get(k))
    message = data.get("human") or data.get("message") or data.get("event") or ""
    return LogEntry(
        ts=float(ts) if isinstance(ts, int | float) else None,
        level=str(data.get("level", "")),
        message=str(message),
        job_id=str(data.get("job_id") or data.get("task_id") or ""),
        correlation_id=str(data.get("correlation_id") or data.get("corr_id") or ""),
        ids=ids,
    )


class LogTailer:
    """Reads the complete lines appended to ``path`` since the previous call."""

    def __init__(self, path: Path, first_read_bytes: int = FIRST_READ_BYTES) -> None:
        self.path = path
        self._first_read = first_read_bytes
        self._offset: int | None = None
        self._inode: int | None = None
        self._partial = b""

    def read_new(self) -> list[str]:
        """Return the new complete lines (decoded, without newlines); ``[]`` when the
        file is missing. Starts over after rotation or truncation. BLOCKING."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return []
        if self._offset is None or stat.st_ino != self._inode or stat.st_size < self._offset:
            self._offset, self._inode, self._partial = 0, stat.st_ino, b""
        skip_first = stat.st_size - self._offset > self._first_read
        if skip_first:  # too far behind: keep only the newest part
            self._offset, self._partial = stat.st_size - self._first_read, b""
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        if skip_first and lines:
            lines.pop(0)  # started mid-line
        return [ln.decode("utf-8", "replace") for ln in lines if ln.strip()]


class LogTailView(QWidget):
    """The log tail with its filter field."""

    def __init__(
        self, bridge: Bridge, parent: QWidget | None = None, poll_ms: int = POLL_MS
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.tailer = LogTailer(Path(bridge.controls.log_path()))
        self.entries: deque[LogEntry] = deque(maxlen=MAX_LINES)
        self._polling = False
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def _build(self) -> None:
        self.filter_edit = QLineEdit(self)
        self.filter_edit.setPlaceholderText("Task id or correlation id")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setAccessibleName("Log filter by task or correlation id")
        self.filter_edit.textChanged.connect(self._rerender)
        label = QLabel("Log &filter:", self)
        label.setBuddy(self.filter_edit)
        self.path_label = QLabel(str(self.tailer.path), self)
        self.path_label.setToolTip("The JSON-lines log file being followed")
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_LINES)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setAccessibleName("Log tail")
        bar = QHBoxLayout()
        bar.addWidget(label)
        bar.addWidget(self.filter_edit, 1)
        bar.addWidget(self.path_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.text, 1)

    def set_filter(self, text: str) -> None:
        """Show only the lines whose task or correlation id contains ``text``."""
        self.filter_edit.setText(text)

    def shown_lines(self) -> list[str]:
        """Return the lines currently displayed, top to bottom."""
        body = self.text.toPlainText()
        return body.split("\n") if body else []

    def _tick(self) -> None:
        if self._polling or not self.isVisible():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no asyncio loop drives Qt (plain widget tests)
        self._polling = True
        self.bridge.run(self.refresh(), "reading the log file")

    async def refresh(self) -> int:
        """Read new lines in a worker thread and show the matching ones; returns how
        many were read. Raises OSError when the file cannot be read."""
        try:
            loop = asyncio.get_running_loop()
            lines = await loop.run_in_executor(None, self.tailer.read_new)
        finally:
            self._polling = False
        self.add_lines(lines)
        return len(lines)

    def add_lines(self, lines: Iterable[str]) -> None:
        """Parse and keep ``lines``; append the matching ones in one update."""
        fresh = [parse_line(line) for line in lines]
        self.entries.extend(fresh)
        needle = self.filter_edit.text()
        shown = [e.text() for e in fresh[-MAX_LINES:] if e.matches(needle)]
        if shown:
            self.text.appendPlainText("\n".join(shown))

    def _rerender(self, needle: str) -> None:
        shown = [e.text() for e in self.entries if e.matches(needle)]
        self.text.setPlainText("\n".join(shown))
        self.text.moveCursor(QTextCursor.MoveOperation.End)
