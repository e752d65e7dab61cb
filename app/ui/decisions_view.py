"""The placement decisions view: why each task went where it went.

A bounded table of recent decisions (newest on top), an outcome filter, and a
detail pane listing every candidate pool of the selected decision with its
outcome and the filter or ranking key behind it. Everything shown is read from
the records' fields (outcome, pool_id, refusal_reason, filter, rank_key); the
human reason texts are displayed, never parsed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelection,
    QModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.orchestrator.contracts import CandidateRecord, DecisionRecord, TaskView
from app.orchestrator.vram import shortfall_text
from app.ui.bridge import Bridge
from app.ui.error_text import refusal_sentence
from app.ui.table_model import Index, RowsModel

MAX_ROWS = 500

# Accent colours that read on light and dark palettes.
OUTCOME_COLOURS = {
    "selected": QColor("#2e9d4f"),
    "admitted": QColor("#2e9d4f"),
    "outranked": QColor("#c98a1b"),
    "filtered": QColor("#d04848"),
    "refused": QColor("#d04848"),
}

OUTCOME_FILTERS = (
    ("All decisions", "all"),
    ("Admitted", "admitted"),
    ("Refused", "refused"),
)


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def outcome_text(record: DecisionRecord) -> str:
    """Return the pool the task was queued on, or "Refused: <plain sentence of why>"."""
    if record.outcome == "admitted":
        return record.pool_id or ""
    why = refusal_sentence(record.refusal_reason, record.refusal_code, record.selected_pool_id)
    return f"Refused: {why}"


def refusal_details(record: DecisionRecord) -> str:
    """Return "CODE: reason" of a refused decision ("" when admitted)."""
    if record.outcome == "admitted":
        return ""
    return ": ".join(x for x in (record.refusal_code, record.refusal_reason) if x)


def candidate_rule(candidate: CandidateRecord) -> str:
    """Return the filter (filtered) or ranking key (outranked, selected) behind a candidate."""
    return candidate.filter or candidate.rank_key or ""


def candidate_reason(candidate: CandidateRecord) -> str:
    """Return the candidate's reason; a VRAM shortfall is written from its byte fields."""
    need, free = candidate.vram_need_bytes, candidate.vram_free_bytes
    if need is not None and free is not None:
        return shortfall_text(need, free)
    return candidate.reason


class DecisionTableModel(RowsModel[DecisionRecord]):
    """Recent decisions, newest first, at most ``capacity`` rows."""

    HEADERS = (
        "Time",
        "Chat / prompt",
        "Outcome",
        "Priority",
        "Mode",
        "Candidates",
        "Pinned",
        "Fallback",
    )
    LABEL, OUTCOME = 1, 2

    def __init__(self, capacity: int = MAX_ROWS, parent: Any = None) -> None:
        super().__init__(parent)
        self._capacity = max(1, capacity)
        self.labels: dict[str, str] = {}

    def set_label(self, task_id: str, label: str) -> None:
        """Name ``task_id``'s rows (a chat title or the prompt's first words)."""
        if not label or self.labels.get(task_id) == label:
            return
        self.labels[task_id] = label
        while len(self.labels) > 4 * self._capacity:  # forget the oldest names
            self.labels.pop(next(iter(self.labels)))
        row = self.row_of(task_id)
        if row is not None:
            cell = self.index(row, self.LABEL)
            self.dataChanged.emit(cell, cell)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        record = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._cell(record, index.column())
        if role == Qt.ItemDataRole.ToolTipRole:
            label = self.labels.get(record.task_id, "")
            lines = (label, f"task {record.task_id}", refusal_details(record), record.summary)
            return "\n".join(x for x in lines if x)
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == self.OUTCOME:
            return OUTCOME_COLOURS[record.outcome]
        return None

    def _cell(self, record: DecisionRecord, column: int) -> str:
        values = (
            _clock(record.at),
            self.labels.get(record.task_id) or record.prompt_start or record.task_id[:8],
            outcome_text(record),
            str(record.priority),
            str(record.mode),
            str(record.candidates_considered),
            _yes_no(record.pinned),
            _yes_no(record.fallback_used),
        )
        return values[column]

    def record(self, row: int) -> DecisionRecord:
        """Return the decision shown in ``row``; raises IndexError."""
        return self._rows[row]

    def row_of(self, task_id: str) -> int | None:
        """Return the row of the newest decision for ``task_id``, or None."""
        return next((i for i, r in enumerate(self._rows) if r.task_id == task_id), None)

    def reset(self, records: list[DecisionRecord]) -> None:
        """Replace every row with ``records`` (newest first), keeping the bound."""
        self.set_rows(list(records[: self._capacity]))

    def add_many(self, records: Sequence[DecisionRecord]) -> None:
        """Insert ``records`` (oldest first) on top, keeping the bound."""
        for record in records:
            self.add(record)

    def add(self, record: DecisionRecord) -> None:
        """Insert ``record`` on top and drop the oldest row beyond the bound."""
        self.beginInsertRows(QModelIndex(), 0, 0)
        self._rows.insert(0, record)
        self.endInsertRows()
        if len(self._rows) > self._capacity:
            last = len(self._rows) - 1
            self.beginRemoveRows(QModelIndex(), self._capacity, last)
            del self._rows[self._capacity :]
            self.endRemoveRows()


class OutcomeFilter(QSortFilterProxyModel):
    """Keeps all decisions, only admissions, or only refusals."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._mode = "all"

    def set_mode(self, mode: str) -> None:
        """Show ``"all"``, ``"admitted"`` or ``"refused"`` decisions."""
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.10
            self.beginFilterChange()
            self._mode = mode
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self._mode = mode
            self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent: Index) -> bool:
        if self._mode == "all":
            return True
        source = self.sourceModel()
        assert isinstance(source, DecisionTableModel)
        return source.record(row).outcome == self._mode


def _candidate_order(candidate: CandidateRecord) -> tuple[int, int, str]:
    ranked = candidate.rank is not None
    return (0 if ranked else 1, candidate.rank or 0, candidate.pool_id)


class CandidateTableModel(RowsModel[CandidateRecord]):
    """The candidate pools of one decision."""

    HEADERS = ("Pool", "Outcome", "Filter / rank key", "Reason", "Predicted end")

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        cand = self._rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return self.cell(index.row(), index.column())
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == 1:
            return OUTCOME_COLOURS.get(cand.outcome)
        return None

    def cell(self, row: int, column: int) -> str:
        """Return the text shown at ``(row, column)``; raises IndexError."""
        cand = self._rows[row]
        end = "" if cand.predicted_end_ms is None else f"{cand.predicted_end_ms:.0f} ms"
        reason = candidate_reason(cand)
        return (cand.pool_id, cand.outcome, candidate_rule(cand), reason, end)[column]

    def set_candidates(self, candidates: list[CandidateRecord]) -> None:
        """Show ``candidates`` in rank order (selected or refused first), then filtered."""
        self.set_rows(sorted(candidates, key=_candidate_order))


class DecisionsView(QWidget):
    """Recent placement decisions with a per-candidate explanation."""

    def __init__(self, bridge: Bridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.model = DecisionTableModel(MAX_ROWS, self)
        self.proxy = OutcomeFilter(self)
        self.proxy.setSourceModel(self.model)
        self.candidates = CandidateTableModel(self)
        self._build()
        self.model.reset(bridge.decisions(MAX_ROWS))
        for task in bridge.tasks(MAX_ROWS):
            self.model.set_label(task.task_id, task.prompt_start)
        bridge.decisionsMade.connect(self.model.add_many)
        bridge.tasksChanged.connect(self._on_tasks)

    def set_label(self, task_id: str, label: str) -> None:
        """Show ``label`` (e.g. the chat's title) on ``task_id``'s rows."""
        self.model.set_label(task_id, label)

    def _on_tasks(self, views: Sequence[TaskView]) -> None:
        for view in views:
            if view.task_id not in self.model.labels:
                self.model.set_label(view.task_id, view.prompt_start)

    # ---- layout --------------------------------------------------------------------

    def _build(self) -> None:
        self.filter_box = QComboBox(self)
        for text, mode in OUTCOME_FILTERS:
            self.filter_box.addItem(text, mode)
        self.filter_box.setAccessibleName("Decision outcome filter")
        self.filter_box.currentIndexChanged.connect(self._on_filter)
        label = QLabel("&Outcome:", self)
        label.setBuddy(self.filter_box)
        bar = QHBoxLayout()
        bar.addWidget(label)
        bar.addWidget(self.filter_box)
        bar.addStretch(1)
        self.table = self._table(self.proxy, "Placement decisions")
        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        self.detail_title = QLabel("Select a decision to see every candidate and why.", self)
        self.detail_title.setWordWrap(True)
        self.detail_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail_table = self._table(self.candidates, "Candidates of the selected decision")
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(self.table)
        splitter.addWidget(self._detail_pane())
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(splitter, 1)
        self.setTabOrder(self.filter_box, self.table)
        self.setTabOrder(self.table, self.detail_table)

    def _detail_pane(self) -> QWidget:
        pane = QWidget(self)
        self.details_button = QPushButton("Details", pane)
        self.details_button.setCheckable(True)
        self.details_button.setFlat(True)
        self.details_button.setVisible(False)
        self.details = QLabel(pane)
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setVisible(False)
        self.details_button.toggled.connect(self.details.setVisible)
        head = QHBoxLayout()
        head.addWidget(self.detail_title, 1)
        head.addWidget(self.details_button, 0, Qt.AlignmentFlag.AlignTop)
        box = QVBoxLayout(pane)
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(head)
        box.addWidget(self.details)
        box.addWidget(self.detail_table, 1)
        return pane

    def _table(self, model: QAbstractTableModel | QSortFilterProxyModel, name: str) -> QTableView:
        table = QTableView(self)
        table.setModel(model)
        table.setAccessibleName(name)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setAlternatingRowColors(True)
        table.verticalHeader().setVisible(False)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # the prompt and the outcome sentence, or the candidate's reason
        for wide in (1, 2) if model is self.proxy else (3,):
            header.setSectionResizeMode(wide, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(False)
        return table

    # ---- behaviour -----------------------------------------------------------------

    def set_outcome_filter(self, mode: str) -> None:
        """Show ``"all"``, ``"admitted"`` or ``"refused"`` decisions; raises ValueError."""
        index = self.filter_box.findData(mode)
        if index < 0:
            raise ValueError(f"unknown outcome filter {mode!r}; use all, admitted or refused")
        self.filter_box.setCurrentIndex(index)

    def visible_task_ids(self) -> list[str]:
        """Return the task ids of the rows the filter shows, top to bottom."""
        rows = (
            self.proxy.mapToSource(self.proxy.index(r, 0)).row()
            for r in range(self.proxy.rowCount())
        )
        return [self.model.record(r).task_id for r in rows]

    def select_task(self, task_id: str) -> bool:
        """Select the newest visible decision of ``task_id``; returns False when not shown."""
        row = self.model.row_of(task_id)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            return False
        self.table.selectRow(index.row())
        self.table.scrollTo(index)
        return True

    def selected_record(self) -> DecisionRecord | None:
        """Return the decision selected in the table, or None."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.model.record(self.proxy.mapToSource(rows[0]).row())

    def _on_filter(self, _index: int) -> None:
        self.proxy.set_mode(str(self.filter_box.currentData()))

    def _on_selection(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        self.show_detail(self.selected_record())

    def show_detail(self, record: DecisionRecord | None) -> None:
        """Fill the detail pane with ``record``'s candidates (clears it for None)."""
        refused = record is not None and record.outcome == "refused"
        self.details_button.setChecked(False)
        self.details_button.setVisible(refused)
        if record is None:
            self.detail_title.setText("Select a decision to see every candidate and why.")
            self.candidates.set_candidates([])
            return
        self.detail_title.setText(detail_text(record))
        self.details.setText(f"{refusal_details(record)}\n{record.summary}" if refused else "")
        self.candidates.set_candidates(list(record.candidates))


def detail_text(record: DecisionRecord) -> str:
    """Return the heading of the detail pane: task, outcome, summary, rules applied.

    A refusal's summary holds the core's own message (written for API clients), so
    it stays behind the pane's Details toggle instead (see ``refusal_details``).
    """
    filters = ", ".join(record.filters_applied) or "none"
    ties = ", ".join(record.tie_breakers_applied) or "none"
    summary = "" if record.outcome == "refused" else f"\n{record.summary}"
    return (
        f"Task {record.task_id} ({record.priority}, {record.mode}) at {_clock(record.at)}: "
        f"{outcome_text(record)}{summary}\n"
        f"Filters applied: {filters}. Tie-breakers applied: {ties}. "
        f"Decided by: {record.deciding_key or 'only candidate'}."
    )
