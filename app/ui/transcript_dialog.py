"""A read-only dialog showing a finished task's trace artifact: its placement
decision and the SSE transcript its reader received."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from app.orchestrator.artifacts_port import StoredArtifact


def decision_text(decision: dict[str, Any] | None) -> str:
    """Return the decision as indented JSON, or a sentence when none was kept. Pure."""
    if not decision:
        return "The placement decision is no longer kept."
    return json.dumps(decision, indent=2, ensure_ascii=False)


def transcript_text(content: dict[str, Any]) -> str:
    """Return the transcript, with a closing note when it was cut short. Pure."""
    text = str(content.get("transcript", ""))
    if content.get("truncated"):
        text += "\n[The transcript was cut here: it passed the size kept per task.]\n"
    return text


class TranscriptDialog(QDialog):
    """Shows ``artifact`` (a ``trace`` of one task) read-only; Close dismisses it."""

    def __init__(self, artifact: StoredArtifact, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        content = artifact.content
        task_id = str(content.get("task_id", ""))
        self.setWindowTitle(f"Transcript of task {task_id[:8]}")
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.decision = self._text(decision_text(content.get("decision")), mono)
        self.transcript = self._text(transcript_text(content), mono)
        self.transcript.setAccessibleName("Stream transcript")
        self.decision.setAccessibleName("Placement decision")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Task {task_id} · artifact {artifact.id[:12]}", self))
        layout.addWidget(QLabel("Placement decision", self))
        layout.addWidget(self.decision, 1)
        layout.addWidget(QLabel("What the stream's reader received", self))
        layout.addWidget(self.transcript, 3)
        layout.addWidget(buttons)
        self.resize(720, 560)

    def _text(self, text: str, font: Any) -> QPlainTextEdit:
        box = QPlainTextEdit(self)
        box.setReadOnly(True)
        box.setFont(font)
        box.setPlainText(text)
        return box
