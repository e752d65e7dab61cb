"""A flat Qt table model over a list of rows with fixed column headers."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

T = TypeVar("T")
Index = QModelIndex | QPersistentModelIndex


class RowsModel(QAbstractTableModel, Generic[T]):
    """One row per item of ``_rows`` and one column per entry of ``HEADERS``.

    Subclasses set ``HEADERS`` and implement ``data``; they change ``_rows``
    only between the matching begin/end calls of ``QAbstractItemModel``.
    """

    HEADERS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[T] = []

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None

    def set_rows(self, rows: list[T]) -> None:
        """Replace every row with ``rows`` (a reset: views drop their selection)."""
        self.beginResetModel()
        self._rows = rows
        self.endResetModel()
