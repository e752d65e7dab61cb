"""The option rows of a chat (model, priority, placement, sampling, system prompt) and
the message box (Enter sends, Shift+Enter makes a new line)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.orchestrator.contracts import PoolView, Priority
from app.ui.chat_logic import MODES, ChatOptions, parse_seed, target_entries

SEND_KEYS = frozenset({Qt.Key.Key_Return, Qt.Key.Key_Enter})


class Composer(QPlainTextEdit):
    """The message box: Enter (or Ctrl+Enter) emits ``sendRequested``; Shift+Enter
    inserts a newline; an IME composition is never interrupted."""

    sendRequested = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        """Send on Enter without Shift; everything else edits as usual."""
        shift = event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        if event.key() in SEND_KEYS and not shift:
            event.accept()
            self.sendRequested.emit()
            return
        super().keyPressEvent(event)


class ChatOptionsRow(QWidget):
    """Model / pool and priority on one line; the rest behind an "Options" toggle."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.target = QComboBox()
        self.target.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.target.setMinimumContentsLength(10)
        self.priority = QComboBox()
        for prio in Priority:
            self.priority.addItem(prio.value, prio.value)
        self.mode = QComboBox()
        for mode in MODES:
            self.mode.addItem(mode, mode)
        self.pin_pool = QComboBox()
        self.pool_choice = QListWidget()
        self.pool_choice.setFlow(QListWidget.Flow.LeftToRight)
        self.pool_choice.setMaximumHeight(32)
        self.pool_choice.setAccessibleName("Pools to prefer or avoid")
        self.seed = QLineEdit()
        self.seed.setPlaceholderText("random")
        self.seed.setMaximumWidth(120)
        self.max_tokens = _spin(1, 131_072, 256)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(0.8)
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText(
            "System prompt for this chat (optional), e.g. “Answer briefly.”"
        )
        self.system_prompt.setAccessibleName("System prompt")
        self.system_prompt.setMaximumHeight(56)
        self.toggle = QToolButton()
        self.toggle.setText("Options")
        self.toggle.setCheckable(True)
        self.toggle.setToolTip("Placement, seed, max tokens, temperature and system prompt")
        self.mode.currentIndexChanged.connect(self._show_mode_choices)
        self._layout()
        self.toggle.toggled.connect(self.more.setVisible)
        self.more.setVisible(False)
        self._show_mode_choices()

    def _layout(self) -> None:
        self.pools_label = QLabel("P&ools")
        top = _row([("&Model / pool", self.target, 3), ("&Priority", self.priority, 1)])
        top.addWidget(self.toggle)
        self.more = QWidget()
        more = QVBoxLayout(self.more)
        more.setContentsMargins(0, 0, 0, 0)
        placement = _row([("Pl&acement", self.mode, 1), (self.pools_label, self.pin_pool, 1)])
        placement.insertWidget(placement.count() - 1, self.pool_choice, 2)
        more.addLayout(placement)
        more.addLayout(
            _row(
                [
                    ("S&eed", self.seed, 1),
                    ("Max &tokens", self.max_tokens, 1),
                    ("Te&mp", self.temperature, 1),
                ]
            )
        )
        more.addLayout(_row([("S&ystem prompt", self.system_prompt, 1)], stretch=False))
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(top)
        box.addWidget(self.more)

    def _show_mode_choices(self) -> None:
        mode = self.mode.currentData()
        self.pin_pool.setVisible(mode == "pin")
        self.pool_choice.setVisible(mode in ("prefer", "avoid"))
        self.pools_label.setVisible(mode != "auto")
        self.pools_label.setBuddy(self.pin_pool if mode == "pin" else self.pool_choice)

    def set_pools(self, pools: Sequence[PoolView]) -> None:
        """Offer ``pools`` in the pickers, keeping the current choices where possible."""
        refill(self.target, target_entries(pools))
        refill(self.pin_pool, [(p.pool_id, p.pool_id) for p in pools])
        ticked = set(self.ticked())
        self.pool_choice.clear()
        for p in pools:
            item = QListWidgetItem(p.pool_id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            checked = p.pool_id in ticked
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.pool_choice.addItem(item)

    def ticked(self) -> list[str]:
        """Return the ticked pools of prefer / avoid."""
        items = (self.pool_choice.item(i) for i in range(self.pool_choice.count()))
        return [it.text() for it in items if it.checkState() == Qt.CheckState.Checked]

    def options(self) -> ChatOptions:
        """Return the picker values. Raises ValueError for an invalid seed."""
        return ChatOptions(
            target=self.target.currentData() or "",
            priority=Priority(self.priority.currentData()),
            mode=self.mode.currentData(),
            pin_pool=self.pin_pool.currentData(),
            pools=tuple(self.ticked()),
            seed=parse_seed(self.seed.text()),
            max_tokens=self.max_tokens.value(),
            temperature=self.temperature.value(),
        )


def _spin(low: int, high: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    return spin


def _row(
    entries: Sequence[tuple[str | QLabel, QWidget, int]], *, stretch: bool = True
) -> QHBoxLayout:
    row = QHBoxLayout()
    for text, widget, factor in entries:
        label = text if isinstance(text, QLabel) else QLabel(text)
        label.setBuddy(widget)
        row.addWidget(label)
        row.addWidget(widget, factor)
        widget.setAccessibleName(label.text().replace("&", ""))
    if stretch:
        row.addStretch(1)
    return row


def refill(combo: QComboBox, entries: Sequence[tuple[str, str]]) -> None:
    """Replace the combo's entries, keeping the current value when it is still offered."""
    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    for text, data in entries:
        combo.addItem(text, data)
    index = combo.findData(current)
    combo.setCurrentIndex(max(index, 0))
    combo.blockSignals(False)
