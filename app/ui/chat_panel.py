"""Chat panel: conversations in tabs, each streaming a multi-turn chat from the core.

Tokens are never written one by one: the transcript buffers them and appends
them with a single ``QTextCursor`` insert on a 25 ms timer (see ``transcript``).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.orchestrator.contracts import (
    ChatMessage,
    DecisionRecord,
    FinishReason,
    PoolView,
    Priority,
    TaskView,
)
from app.orchestrator.errors import OrchError
from app.orchestrator.events import END, ERROR, STARTED, TOKEN, EndData, TaskEvent
from app.orchestrator.lifecycle import TaskState
from app.ui.bridge import Bridge
from app.ui.chat_logic import (
    MODES,
    ChatOptions,
    answer_stats,
    build_request,
    parse_seed,
    queued_text,
    refusal_text,
    tab_title,
    target_entries,
)
from app.ui.icons import GREY
from app.ui.transcript import FLUSH_MS, Transcript

Clock = Callable[[], float]


# ---------------------------------------------------------------- one conversation


class _Life:
    """Whether a conversation's widgets still exist, and its stream task to cancel.

    Plain Python, so ``end`` may run from ``destroyed`` after the C++ side is gone.
    """

    def __init__(self) -> None:
        self.alive = True
        self.stream: asyncio.Task[Any] | None = None

    def end(self, *_: object) -> None:
        self.alive = False
        if self.stream is not None and not self.stream.done():
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self.stream.cancel()


class Conversation(QWidget):
    """One chat: options, transcript, prompt, send and cancel. Owns its session id."""

    titleSuggested = Signal(str)

    def __init__(
        self,
        bridge: Bridge,
        parent: QWidget | None = None,
        *,
        clock: Clock = time.monotonic,
        flush_ms: int = FLUSH_MS,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._clock = clock
        self.session_id = str(uuid.uuid4())
        self.history: list[ChatMessage] = []
        self.task_id: str | None = None
        self.last_stats = ""
        self._turns = 0
        self._sending = False
        self._life = _Life()
        self.destroyed.connect(self._life.end)
        self._pool_key: tuple[tuple[str, str], ...] = ()
        self._answer: list[str] = []
        self._t_sent = 0.0
        self._t_first: float | None = None
        self._predicted_ms = 0
        self._header_shown = False
        self._build(flush_ms)
        self._shortcuts()
        self.set_pools(bridge.pools())
        bridge.tasksChanged.connect(self._on_tasks)

    # ---- construction -----------------------------------------------------------

    def _build(self, flush_ms: int) -> None:
        self._build_options()
        self.transcript = Transcript(flush_ms=flush_ms)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.status.setAccessibleName("Task status")
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Message… (Ctrl+Enter sends, Esc cancels)")
        self.prompt.setAccessibleName("Prompt")
        self.prompt.setMaximumHeight(110)
        self.send_button = QPushButton("Send")
        self.send_button.setToolTip("Send (Ctrl+Enter)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Cancel the running answer (Esc)")
        self.cancel_button.setEnabled(False)
        self.send_button.clicked.connect(self.send)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.prompt, 1)
        bottom.addLayout(buttons)
        box = QVBoxLayout(self)
        box.addLayout(self._options)
        box.addWidget(self.transcript, 1)
        box.addWidget(self.status)
        box.addLayout(bottom)
        self.setTabOrder(self.prompt, self.send_button)
        self.setTabOrder(self.send_button, self.cancel_button)

    def _build_options(self) -> None:
        self.target = QComboBox()
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
        self.seed = QLineEdit()
        self.seed.setPlaceholderText("random")
        self.seed.setMaximumWidth(140)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 131_072)
        self.max_tokens.setValue(256)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(0.8)
        self.mode.currentIndexChanged.connect(self._show_mode_choices)
        self._options = QVBoxLayout()
        self._label_rows()
        self._show_mode_choices()

    def _label_rows(self) -> None:
        self.pools_label = QLabel("P&ools")
        rows: list[list[tuple[str | QLabel, QWidget, int]]] = [
            [("&Model / pool", self.target, 3), ("&Priority", self.priority, 1)],
            [("Pl&acement", self.mode, 1), (self.pools_label, self.pin_pool, 1)],
            [
                ("S&eed", self.seed, 1),
                ("Max &tokens", self.max_tokens, 1),
                ("Te&mp", self.temperature, 1),
            ],
        ]
        for entries in rows:
            row = QHBoxLayout()
            for text, widget, stretch in entries:
                label = text if isinstance(text, QLabel) else QLabel(text)
                label.setBuddy(widget)
                row.addWidget(label)
                row.addWidget(widget, stretch)
                widget.setAccessibleName(label.text().replace("&", ""))
            if entries[0][1] is self.mode:
                row.addWidget(self.pool_choice, 2)
            row.addStretch(1)
            self._options.addLayout(row)
        self.pool_choice.setAccessibleName("Pools to prefer or avoid")

    def _shortcuts(self) -> None:
        ctx = Qt.ShortcutContext.WidgetWithChildrenShortcut
        for keys, slot in (
            ("Ctrl+Return", self.send),
            ("Ctrl+Enter", self.send),
            ("Esc", self.cancel),
        ):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(ctx)
            shortcut.activated.connect(slot)

    def _show_mode_choices(self) -> None:
        mode = self.mode.currentData()
        self.pin_pool.setVisible(mode == "pin")
        self.pool_choice.setVisible(mode in ("prefer", "avoid"))
        self.pools_label.setVisible(mode != "auto")
        self.pools_label.setBuddy(self.pin_pool if mode == "pin" else self.pool_choice)

    # ---- pools -------------------------------------------------------------------

    def set_pools(self, pools: Sequence[PoolView]) -> None:
        """Offer ``pools`` in the pickers, keeping the current choices where possible."""
        key = tuple((p.pool_id, p.model) for p in pools)
        if key == self._pool_key:
            return
        self._pool_key = key
        _refill(self.target, target_entries(pools))
        _refill(self.pin_pool, [(p.pool_id, p.pool_id) for p in pools])
        ticked = set(self._ticked())
        self.pool_choice.clear()
        for p in pools:
            item = QListWidgetItem(p.pool_id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            checked = p.pool_id in ticked
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.pool_choice.addItem(item)

    def _ticked(self) -> list[str]:
        items = (self.pool_choice.item(i) for i in range(self.pool_choice.count()))
        return [it.text() for it in items if it.checkState() == Qt.CheckState.Checked]

    def options(self) -> ChatOptions:
        """Return the picker values. Raises ValueError for an invalid seed."""
        return ChatOptions(
            target=self.target.currentData() or "",
            priority=Priority(self.priority.currentData()),
            mode=self.mode.currentData(),
            pin_pool=self.pin_pool.currentData(),
            pools=tuple(self._ticked()),
            seed=parse_seed(self.seed.text()),
            max_tokens=self.max_tokens.value(),
            temperature=self.temperature.value(),
        )

    # ---- sending -------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Return True while a prompt is being submitted or its task is queued or running."""
        return self.task_id is not None or self._sending

    def send(self) -> None:
        """Submit the prompt as the next turn and start streaming. Never blocks."""
        text = self.prompt.toPlainText().strip()
        if self.busy or not text:
            return
        self._sending = True
        self.send_button.setEnabled(False)
        self._bridge.run(self._send(text), "sending the prompt")

    async def _send(self, text: str) -> None:
        try:
            await self._check_session()
            req = build_request(self.history, text, self.options(), self.session_id)
            resp = await self._bridge.submit(req)
        except ValueError as exc:
            self.notice(str(exc).splitlines()[0], error=True)
            return
        except OrchError as exc:
            self.notice(refusal_text(exc), error=True)
            self.status.setText("Not sent.")
            return
        finally:
            self._sending = False
            self.send_button.setEnabled(self.task_id is None)
        self._turns += 1
        self.history.append(ChatMessage(role="user", content=text))
        self.prompt.clear()
        self._begin_turn(text, str(resp.task_id))
        self._predicted_ms = resp.predicted_start_ms
        self.status.setText(queued_text(resp.pool_id, resp.queue_position, resp.predicted_start_ms))
        self._life.stream = self._bridge.run(self._consume(str(resp.task_id)), "chat stream")

    async def _check_session(self) -> None:
        if self._turns and await self._bridge.session(self.session_id) is None:
            self.session_id = str(uuid.uuid4())
            self.notice(
                "The session expired; this turn starts a new session "
                "(the conversation so far is sent again)."
            )

    def _begin_turn(self, text: str, task_id: str) -> None:
        if self._turns == 1:
            self.titleSuggested.emit(tab_title(text))
        self.task_id = task_id
        self._answer = []
        self._t_sent, self._t_first = self._clock(), None
        self._header_shown = False
        if not self.transcript.document().isEmpty():
            self.transcript.append_text("")
        self.transcript.append_html("<b>You</b>")
        self.transcript.append_text(text)
        self.send_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.transcript.start_stream()

    def cancel(self) -> None:
        """Ask the core to cancel this conversation's running task. Never blocks."""
        if self.task_id is None:
            return
        self.status.setText("Canceling…")
        self._bridge.run(self._cancel(self._bridge.cancel(self.task_id)), "canceling the task")

    async def _cancel(self, command: Awaitable[None]) -> None:
        try:
            await command
        except OrchError as exc:
            self.notice(f"Could not cancel: {exc.message}", error=True)

    # ---- streaming ------------------------------------------------------------------

    async def _consume(self, task_id: str) -> None:
        try:
            async for batch in self._bridge.stream(task_id):
                for event in batch:
                    self._on_event(event)
        except OrchError as exc:
            self.flush()
            self.notice(f"The stream failed: {exc.message} ({exc.code})", error=True)
        finally:
            self._end_turn()

    def _on_event(self, event: TaskEvent) -> None:
        if event.kind == TOKEN:
            if self._t_first is None:
                self._t_first = self._clock()
                self._show_header(None)
            self.transcript.add(event.data["t"])
            self._answer.append(event.data["t"])
        elif event.kind == STARTED:
            self._show_header(event.data["pool_id"])
        elif event.kind == END:
            self._on_end(event.data)
        elif event.kind == ERROR:
            self.flush()
            data = event.data
            code, msg = data["code"], data["message"]
            retry = " (retriable)" if data["retriable"] else ""
            self.notice(f"Error {code}: {msg}{retry}", error=True)
            self.status.setText(f"Failed: {code}")

    def _show_header(self, pool_id: str | None) -> None:
        if self._header_shown:
            return
        self._header_shown = True
        why = self._decision_summary()
        where = f" · on {html.escape(pool_id)}" if pool_id else ""
        reason = f" · why: {html.escape(why)}" if why else ""
        self.transcript.append_html(
            f"<b>Assistant</b><span style='color:{GREY}'>{where}{reason}</span>"
        )
        self.transcript.append_text("")
        if pool_id:
            self.status.setText(f"Running on {pool_id}" + (f" — {why}" if why else ""))

    def _decision_summary(self) -> str:
        if self.task_id is None:
            return ""
        record = self._bridge.decision_for(self.task_id)
        return record.summary if isinstance(record, DecisionRecord) else ""

    def _on_end(self, data: EndData) -> None:
        self.flush()
        ttft = None if self._t_first is None else (self._t_first - self._t_sent) * 1000
        self.last_stats = answer_stats(ttft, data)
        self.transcript.muted(self.last_stats)
        canceled = data["finish_reason"] == FinishReason.CANCELED
        self.status.setText("Canceled." if canceled else "Done.")

    def _end_turn(self) -> None:
        if not self._life.alive:
            return
        self.transcript.stop_stream()
        if self._answer:
            self.history.append(ChatMessage(role="assistant", content="".join(self._answer)))
        elif self.history and self.history[-1].role == "user":
            self.history.pop()
        self.task_id = None
        self.send_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_tasks(self, views: Sequence[TaskView]) -> None:
        for view in views:
            if view.task_id == self.task_id and view.state is TaskState.QUEUED and view.pool_id:
                position = view.queue_position or 0
                self.status.setText(queued_text(view.pool_id, position, self._predicted_ms))

    def flush(self) -> None:
        """Append the buffered tokens to the transcript now."""
        self.transcript.flush()

    def notice(self, text: str, *, error: bool = False) -> None:
        """Append a one-line notice to the transcript (red for errors)."""
        self.transcript.notice(text, error=error)

    def close_conversation(self) -> None:
        """Cancel the running task, if any, before the tab goes away."""
        self.cancel()
        self.transcript.stop_stream()
        self._life.end()


def _refill(combo: QComboBox, entries: Sequence[tuple[str, str]]) -> None:
    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    for text, data in entries:
        combo.addItem(text, data)
    index = combo.findData(current)
    combo.setCurrentIndex(max(index, 0))
    combo.blockSignals(False)


# ---------------------------------------------------------------- the panel


class ChatPanel(QWidget):
    """Conversations in tabs; Ctrl+T opens one, Ctrl+W closes the current one."""

    def __init__(
        self,
        bridge: Bridge,
        parent: QWidget | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._clock = clock
        self._count = 0
        self.tabs = QTabWidget()
        self.tabs.setTabsClosable(True)
        self.tabs.setMovable(True)
        self.tabs.tabCloseRequested.connect(self.close_conversation)
        new = QToolButton()
        new.setText("+")
        new.setToolTip("New conversation (Ctrl+T)")
        new.setAccessibleName("New conversation")
        new.clicked.connect(self.new_conversation)
        self.tabs.setCornerWidget(new, Qt.Corner.TopRightCorner)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.tabs)
        ctx = Qt.ShortcutContext.WidgetWithChildrenShortcut
        for keys, slot in (("Ctrl+T", self.new_conversation), ("Ctrl+W", self._close_current)):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(ctx)
            shortcut.activated.connect(slot)
        bridge.poolsChanged.connect(self._on_pools)
        self.new_conversation()

    @property
    def conversations(self) -> list[Conversation]:
        """Return the open conversations in tab order."""
        return [self.tabs.widget(i) for i in range(self.tabs.count())]  # type: ignore[misc]

    def current(self) -> Conversation:
        """Return the conversation in the selected tab."""
        widget = self.tabs.currentWidget()
        assert isinstance(widget, Conversation)
        return widget

    def new_conversation(self) -> Conversation:
        """Open a new conversation tab, select it and focus its prompt."""
        self._count += 1
        conv = Conversation(self._bridge, clock=self._clock)
        index = self.tabs.addTab(conv, f"Chat {self._count}")
        conv.titleSuggested.connect(lambda title: self._retitle(conv, title))
        self.tabs.setCurrentIndex(index)
        conv.prompt.setFocus()
        return conv

    def close_conversation(self, index: int) -> None:
        """Close the tab at ``index`` (canceling its task); keeps at least one open."""
        widget = self.tabs.widget(index)
        if isinstance(widget, Conversation):
            widget.close_conversation()
        self.tabs.removeTab(index)
        if widget is not None:
            widget.deleteLater()
        if self.tabs.count() == 0:
            self.new_conversation()

    def _retitle(self, conv: Conversation, title: str) -> None:
        index = self.tabs.indexOf(conv)
        if index >= 0:
            self.tabs.setTabText(index, title)
            self.tabs.setTabToolTip(index, title)

    def _close_current(self) -> None:
        self.close_conversation(self.tabs.currentIndex())

    def _on_pools(self, _pools: Sequence[PoolView]) -> None:
        pools = self._bridge.pools()
        for conv in self.conversations:
            conv.set_pools(pools)
