"""The list of saved chats beside the chat tabs: search, open, rename, delete, export."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QFont, QPainter, QPalette
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from app.ui.chat_store import ChatStore, ChatSummary

AskText = Callable[[QWidget, str, str], str | None]
"""Ask for a line of text (parent, label, current); None when canceled. Blocks (modal)."""
AskYes = Callable[[QWidget, str], bool]
"""Ask a yes/no question (parent, text). Blocks (modal)."""
AskPath = Callable[[QWidget, str], str | None]
"""Ask where to save (parent, suggested file name); None when canceled. Blocks (modal)."""


def ask_text(parent: QWidget, label: str, current: str) -> str | None:
    """Ask with QInputDialog; returns the stripped text or None."""
    text, ok = QInputDialog.getText(parent, "Rename chat", label, text=current)
    return text.strip() if ok and text.strip() else None


def ask_yes(parent: QWidget, text: str) -> bool:
    """Ask with a QMessageBox; True for Yes."""
    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, "Delete chat?", text, buttons)
    return answer == QMessageBox.StandardButton.Yes


def ask_path(parent: QWidget, name: str) -> str | None:
    """Ask with QFileDialog for a Markdown file to write."""
    start = str(Path.home() / name)
    path, _ = QFileDialog.getSaveFileName(parent, "Export chat", start, "Markdown (*.md)")
    return path or None


def describe(chat: ChatSummary) -> str:
    """Return the second line of a sidebar row: "Dec 01 10:20 · model · pool"."""
    when = time.strftime("%b %d %H:%M", time.localtime(chat.updated))
    return " · ".join(x for x in (when, chat.model, chat.pool) if x)


class TwoLineDelegate(QStyledItemDelegate):
    """Paints a row's first line (the title) bold and its second line small and muted."""

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        """Return room for two lines plus padding."""
        height = option.fontMetrics.height()
        return QSize(120, 2 * height + 12)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        """Draw the selection background, the bold title and the muted details."""
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        title, _, details = str(index.data() or "").partition("\n")
        opt.text = ""
        style = opt.widget.style() if opt.widget else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        palette: QPalette = opt.palette
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        rect: QRect = opt.rect.adjusted(8, 4, -8, -4)
        line = opt.fontMetrics.height()
        painter.save()
        bold = QFont(opt.font)
        bold.setBold(True)
        painter.setFont(bold)
        painter.setPen(palette.color(role))
        elided = painter.fontMetrics().elidedText(title, Qt.TextElideMode.ElideRight, rect.width())
        painter.drawText(rect.x(), rect.y() + line - 3, elided)
        small = QFont(opt.font)
        small.setPointSizeF(max(6.0, small.pointSizeF() * 0.85))
        painter.setFont(small)
        if not selected:
            painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
        painter.drawText(rect.x(), rect.y() + 2 * line, details)
        painter.restore()


class ChatSidebar(QWidget):
    """Saved chats, newest first. Emits ``openRequested(chat_id)``, ``newRequested``,
    ``deleted(chat_id)``, ``renamed(chat_id, title)`` and ``failed(sentence)``."""

    openRequested = Signal(str)
    newRequested = Signal()
    failed = Signal(str)
    deleted = Signal(str)
    renamed = Signal(str, str)

    def __init__(
        self,
        store: ChatStore,
        parent: QWidget | None = None,
        *,
        text: AskText = ask_text,
        yes: AskYes = ask_yes,
        path: AskPath = ask_path,
    ) -> None:
        super().__init__(parent)
        self._store = store
        self._ask_text, self._ask_yes, self._ask_path = text, yes, path
        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Start a new chat (Ctrl+T)")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search chats")
        self.search.setAccessibleName("Search chats")
        self.search.setClearButtonEnabled(True)
        self.list = QListWidget()
        self.list.setAccessibleName("Saved chats")
        self.list.setItemDelegate(TwoLineDelegate(self.list))
        self.list.setUniformItemSizes(True)
        self.empty = QLabel("No saved chats yet. Type a message to start one.")
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._buttons()
        self.new_button.clicked.connect(self.newRequested)
        self.search.textChanged.connect(self.refresh)
        self.list.itemActivated.connect(self._open_item)
        self.list.itemClicked.connect(self._open_item)
        self.refresh()

    def _buttons(self) -> None:
        self.rename_button = QPushButton("Rename")
        self.delete_button = QPushButton("Delete")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save the selected chat as a Markdown file")
        self.rename_button.clicked.connect(self.rename_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.export_button.clicked.connect(self.export_selected)
        row = QHBoxLayout()
        row.setSpacing(2)
        for button in (self.rename_button, self.delete_button, self.export_button):
            button.setMinimumWidth(40)
            row.addWidget(button)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.new_button)
        box.addWidget(self.search)
        box.addWidget(self.list, 1)
        box.addWidget(self.empty, 1)
        box.addLayout(row)

    def refresh(self) -> None:
        """Reload the rows from the store (filtered by the search text); keeps the selection."""
        selected = self.selected_id()
        self.list.clear()
        chats = self._store.chats(self.search.text())
        for chat in chats:
            item = QListWidgetItem(f"{chat.title}\n{describe(chat)}")
            item.setData(Qt.ItemDataRole.UserRole, chat.chat_id)
            item.setToolTip(chat.title)
            self.list.addItem(item)
            if chat.chat_id == selected:
                self.list.setCurrentItem(item)
        searching = bool(self.search.text().strip())
        self.empty.setText("No chat matches." if searching else self.empty_text())
        self.empty.setVisible(not chats)
        self.list.setVisible(bool(chats))
        for button in (self.rename_button, self.delete_button, self.export_button):
            button.setEnabled(bool(chats))

    @staticmethod
    def empty_text() -> str:
        """Return the text shown when there is no saved chat."""
        return "No saved chats yet. Type a message to start one."

    def select(self, chat_id: str) -> None:
        """Highlight the row of ``chat_id`` (no signal)."""
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == chat_id:
                self.list.blockSignals(True)
                self.list.setCurrentItem(item)
                self.list.blockSignals(False)

    def select_none(self) -> None:
        """Highlight no row, e.g. while a new, unsaved chat is open (no signal)."""
        self.list.blockSignals(True)
        self.list.setCurrentRow(-1)
        self.list.blockSignals(False)

    def selected_id(self) -> str | None:
        """Return the selected chat's id, or None."""
        item = self.list.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def _open_item(self, item: QListWidgetItem) -> None:
        self.openRequested.emit(item.data(Qt.ItemDataRole.UserRole))

    def rename_selected(self) -> None:
        """Ask for a new title of the selected chat and save it."""
        chat = self._selected()
        if chat is None:
            return
        title = self._ask_text(self, "New title:", chat.title)
        if title:
            self._store.rename(chat.chat_id, title)
            self.refresh()
            self.renamed.emit(chat.chat_id, title)

    def delete_selected(self) -> None:
        """Delete the selected chat after asking."""
        chat = self._selected()
        if chat is None or not self._ask_yes(self, f"Delete “{chat.title}” for good?"):
            return
        self._store.delete(chat.chat_id)
        self.refresh()
        self.deleted.emit(chat.chat_id)

    def export_selected(self) -> None:
        """Ask for a file and write the selected chat there as Markdown."""
        chat = self._selected()
        if chat is None:
            return
        name = "".join(c if c.isalnum() or c in " -_" else "_" for c in chat.title).strip()
        path = self._ask_path(self, f"{name or 'chat'}.md")
        if not path:
            return
        try:
            self._store.export_markdown(chat.chat_id, path)
        except OSError as exc:
            self.failed.emit(f"Could not save the chat to {path}: {exc.strerror or exc}.")

    def _selected(self) -> ChatSummary | None:
        chat_id = self.selected_id()
        return self._store.get(chat_id) if chat_id else None
