"""Recent and live tasks from every client (GUI and LAN), plus the log tail.

Task updates are coalesced: ``tasksChanged`` and ``sampled`` only mark work to
do, and a short timer applies it to the model at most a few times a second.
Selecting a task filters the log tail by its id.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Sequence
from typing import Any

from PySide6.QtCore import (
    QItemSelection,
    QModelIndex,
    Qt,
    QTimer,
)
from PySide6.QtGui import QAction, QColor, QHideEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.orchestrator.contracts import TaskView
from app.orchestrator.lifecycle import TaskState
from app.ui.bridge import Bridge
from app.ui.log_tail import LogTailView
from app.ui.table_model import Index, RowsModel
from app.ui.transcript_dialog import TranscriptDialog

MAX_TASKS = 500
FLUSH_MS = 250  # at most four model updates per second

# Accent colours that read on light and dark palettes.
STATE_COLOURS = {
    TaskState.QUEUED: QColor("#c98a1b"),
    TaskState.DISPATCHED: QColor("#3b82f6"),
    TaskState.STREAMING: QColor("#3b82f6"),
    TaskState.DONE: QColor("#2e9d4f"),
    TaskState.CANCELED: QColor("#868e96"),
    TaskState.FAILED: QColor("#d04848"),
}


class TaskTableModel(RowsModel[TaskView]):
    """Tasks keyed by id, newest first, at most ``capacity`` rows (finished ones go first)."""

    HEADERS = ("Task", "State", "Pool", "Client", "API", "Tokens out", "TTFT", "Created")

    def __init__(self, capacity: int = MAX_TASKS, parent: Any = None) -> None:
        super().__init__(parent)
        self._capacity = max(1, capacity)
        self._keys: list[float] = []  # -created_at, ascending = newest first

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        task = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.cell(index.row(), index.column())
        if role == Qt.ItemDataRole.ToolTipRole:
            return _tooltip(task)
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == 1:
            return STATE_COLOURS.get(task.state)
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in (5, 6):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def cell(self, row: int, column: int) -> str:
        """Return the text at ``(row, column)``; raises IndexError."""
        t = self._rows[row]
        ttft = "" if t.ttft_ms is None else f"{t.ttft_ms} ms"
        created = time.strftime("%H:%M:%S", time.localtime(t.created_at))
        values = (
            t.task_id[:8],
            t.state,
            t.pool_id or "",
            t.identity,
            t.api,
            str(t.tokens_out),
            ttft,
            created,
        )
        return values[column]

    def task(self, row: int) -> TaskView:
        """Return the task in ``row``; raises IndexError."""
        return self._rows[row]

    def row_of(self, task_id: str) -> int | None:
        """Return the row of ``task_id``, or None when it is not listed."""
        return next((i for i, t in enumerate(self._rows) if t.task_id == task_id), None)

    def live_count(self) -> int:
        """Return how many listed tasks are queued or running."""
        return sum(1 for t in self._rows if not t.state.terminal)

    def task_ids(self) -> list[str]:
        """Return the listed task ids, top to bottom."""
        return [t.task_id for t in self._rows]

    def merge(self, tasks: Iterable[TaskView]) -> None:
        """Update the listed tasks in place and insert new ones in created order."""
        where = {t.task_id: i for i, t in enumerate(self._rows)}
        for task in tasks:
            row = where.get(task.task_id)
            if row is not None:
                self._rows[row] = task
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.HEADERS) - 1))
                continue
            pos = bisect.bisect_right(self._keys, -task.created_at)
            self.beginInsertRows(QModelIndex(), pos, pos)
            self._rows.insert(pos, task)
            self._keys.insert(pos, -task.created_at)
            self.endInsertRows()
            where = {t.task_id: i for i, t in enumerate(self._rows)}
        self._trim()

    def _trim(self) -> None:
        row = len(self._rows) - 1
        while len(self._rows) > self._capacity and row >= 0:
            if self._rows[row].state.terminal:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._rows[row], self._keys[row]
                self.endRemoveRows()
            row -= 1


def _tooltip(task: TaskView) -> str:
    lines = [f"task {task.task_id}", f"correlation id {task.correlation_id}"]
    if task.session_id:
        lines.append(f"session {task.session_id}")
    if task.queue_position is not None and task.state is TaskState.QUEUED:
        lines.append(f"queue position {task.queue_position}")
    if task.decision_summary:
        lines.append(f"placement: {task.decision_summary}")
    if task.error is not None:
        lines.append(f"error {task.error.code}: {task.error.message}")
    return "\n".join(lines)


class TasksView(QWidget):
    """The task list (with Cancel) above the log tail.

    While hidden (another tab of the window is current) it only collects the
    changed tasks, and applies them in one pass when it is shown: a hidden
    table whose columns size to their contents would otherwise measure every
    row on each update."""

    def __init__(self, bridge: Bridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.model = TaskTableModel(MAX_TASKS, self)
        self._pending: dict[str, TaskView] = {}
        self._full_refresh = False
        self._hidden = False
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(FLUSH_MS)
        self._flush_timer.timeout.connect(self.flush)
        self.log_tail = LogTailView(bridge, self)
        self._build()
        self.model.merge(bridge.tasks(MAX_TASKS))
        self._sync_actions()
        bridge.tasksChanged.connect(self._on_tasks)
        bridge.sampled.connect(self._on_sample)

    def _build(self) -> None:
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setAccessibleName("Recent and live tasks")
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        self.cancel_action = QAction("&Cancel task", self)
        self.cancel_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Delete))
        self.cancel_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.cancel_action.triggered.connect(self.cancel_selected)
        self.table.addAction(self.cancel_action)
        self.transcript_action = QAction("Show &transcript", self)
        self.transcript_action.triggered.connect(self.show_transcript)
        self.table.addAction(self.transcript_action)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        self.transcript_button = QPushButton("Show &transcript", self)
        self.transcript_button.setToolTip(
            "Show what the selected finished task streamed, and its placement decision"
        )
        self.transcript_button.clicked.connect(self.show_transcript)
        self.transcript_dialog: TranscriptDialog | None = None
        self.cancel_button = QPushButton("&Cancel task", self)
        self.cancel_button.setToolTip("Cancel the selected queued or running task (Delete)")
        self.cancel_button.clicked.connect(self.cancel_selected)
        self.count_label = QLabel(self)
        self._sync_actions()
        self.setLayout(self._layout())

    def _layout(self) -> QVBoxLayout:
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Tasks from every client (GUI and LAN)", self))
        bar.addStretch(1)
        bar.addWidget(self.count_label)
        bar.addWidget(self.transcript_button)
        bar.addWidget(self.cancel_button)
        top = QWidget(self)
        top_box = QVBoxLayout(top)
        top_box.setContentsMargins(0, 0, 0, 0)
        top_box.addLayout(bar)
        top_box.addWidget(self.table, 1)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(top)
        splitter.addWidget(self.log_tail)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout()
        layout.addWidget(splitter)
        self.setTabOrder(self.table, self.transcript_button)
        self.setTabOrder(self.transcript_button, self.cancel_button)
        self.setTabOrder(self.cancel_button, self.log_tail.filter_edit)
        return layout

    # ---- coalesced updates ---------------------------------------------------------

    def _on_tasks(self, tasks: Sequence[TaskView]) -> None:
        for task in tasks:
            self._pending[task.task_id] = task
        self._schedule()

    def _on_sample(self, _sample: Any) -> None:
        self._full_refresh = True
        self._schedule()

    def _schedule(self) -> None:
        if not self._hidden and not self._flush_timer.isActive():
            self._flush_timer.start()

    def showEvent(self, event: QShowEvent) -> None:
        """Apply what changed while hidden, in one pass."""
        super().showEvent(event)
        self._hidden = False
        if self._pending or self._full_refresh:
            self.flush()

    def hideEvent(self, event: QHideEvent) -> None:
        """Stop updating the table while hidden (changes keep being collected)."""
        super().hideEvent(event)
        self._hidden = True
        self._flush_timer.stop()

    def flush(self) -> None:
        """Apply the pending updates to the model now (one pass)."""
        self._flush_timer.stop()
        if self._full_refresh:
            self._pending.clear()
            self.model.merge(self.bridge.tasks(MAX_TASKS))
        else:
            self.model.merge(list(self._pending.values()))
        self._pending.clear()
        self._full_refresh = False
        self._sync_actions()

    # ---- selection and cancel ------------------------------------------------------

    def selected_task(self) -> TaskView | None:
        """Return the task selected in the table, or None."""
        rows = self.table.selectionModel().selectedRows()
        return self.model.task(rows[0].row()) if rows else None

    def select_task(self, task_id: str) -> bool:
        """Select ``task_id`` in the table; returns False when it is not listed."""
        if self._pending or self._full_refresh:
            self.flush()
        row = self.model.row_of(task_id)
        if row is None:
            return False
        self.table.selectRow(row)
        return True

    def cancel_selected(self) -> None:
        """Cancel the selected task when it is live; errors go to ``report_error``."""
        task = self.selected_task()
        if task is None or task.state.terminal:
            return
        self.bridge.run(self.bridge.cancel(task.task_id), f"cancel {task.task_id[:8]}")

    def show_transcript(self) -> None:
        """Open the selected task's transcript (read through the bridge) in a dialog;
        errors go to ``report_error``."""
        task = self.selected_task()
        if task is None or task.artifact_id is None:
            return
        self.bridge.run(self._open_transcript(task.artifact_id), "show transcript")

    async def _open_transcript(self, artifact_id: str) -> None:
        artifact = await self.bridge.artifact(artifact_id)
        if self.transcript_dialog is not None:
            self.transcript_dialog.close()
        self.transcript_dialog = TranscriptDialog(artifact, self)
        self.transcript_dialog.show()

    def _on_selection(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        task = self.selected_task()
        if task is not None:
            self.log_tail.set_filter(task.task_id)
        self._sync_actions()

    def _sync_actions(self) -> None:
        task = self.selected_task()
        live = task is not None and not task.state.terminal
        self.cancel_button.setEnabled(live)
        self.cancel_action.setEnabled(live)
        kept = task is not None and task.artifact_id is not None
        self.transcript_button.setEnabled(kept)
        self.transcript_action.setEnabled(kept)
        self.count_label.setText(f"{self.model.live_count()} live · {self.model.rowCount()} listed")
