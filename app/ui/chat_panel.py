"""Chat panel: saved chats in a sidebar, the open ones in tabs (see ``conversation``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QKeySequence, QShortcut
from PySide6.QtWidgets import QSplitter, QTabWidget, QToolButton, QVBoxLayout, QWidget

from app.orchestrator.contracts import PoolView
from app.orchestrator.errors import OrchError
from app.ui.bridge import Bridge
from app.ui.chat_sidebar import ChatSidebar
from app.ui.chat_store import ChatStore
from app.ui.chat_summary import TOO_LONG, carried_system_prompt, summarise_history
from app.ui.conversation import Clock, Conversation
from app.ui.error_text import Action, Explained
from app.ui.icons import BLUE, dot_pixmap

__all__ = ["ChatPanel", "Conversation"]

SUMMARISING = "Summarising this conversation for a new chat…"
SUMMARY_FAILED = "No summary for a new chat could be made:"
CARRIED = "This chat continues an earlier one: its summary is in the system prompt (Options)."


class ChatPanel(QWidget):
    """Sidebar of saved chats and tabs of open ones; Ctrl+T opens one, Ctrl+W closes it.

    Emits ``navigate(action)`` for what the window handles (open Models, Settings,
    Pools or the logs) and ``taskLabelled(task_id, chat title)`` for each turn sent.
    ``store`` defaults to an in-memory database.
    """

    navigate = Signal(str)
    taskLabelled = Signal(str, str)

    def __init__(
        self,
        bridge: Bridge,
        parent: QWidget | None = None,
        *,
        store: ChatStore | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._clock = clock
        self.store = store if store is not None else ChatStore(":memory:")
        self._count = 0
        self.sidebar = ChatSidebar(self.store)
        self.sidebar.openRequested.connect(self.open_chat)
        self.sidebar.newRequested.connect(self.new_conversation)
        self.sidebar.deleted.connect(self._on_deleted)
        self.sidebar.renamed.connect(self._on_renamed)
        self.sidebar.failed.connect(bridge.report_error)
        self._build_tabs()
        self.sidebar.setMinimumWidth(150)
        splitter = QSplitter()
        splitter.setChildrenCollapsible(True)
        splitter.addWidget(self.sidebar)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([240, 900])
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(splitter)
        bridge.poolsChanged.connect(self._on_pools)
        self._restore()

    def _build_tabs(self) -> None:
        self.tabs = QTabWidget()
        self.tabs.setTabsClosable(True)
        self.tabs.setMovable(True)
        self.tabs.tabCloseRequested.connect(self.close_conversation)
        self.tabs.currentChanged.connect(self._on_tab)
        new = QToolButton()
        new.setText("+")
        new.setToolTip("New chat (Ctrl+T)")
        new.setAccessibleName("New chat")
        new.clicked.connect(self.new_conversation)
        self.tabs.setCornerWidget(new, Qt.Corner.TopRightCorner)
        ctx = Qt.ShortcutContext.WidgetWithChildrenShortcut
        for keys, slot in (("Ctrl+T", self.new_conversation), ("Ctrl+W", self._close_current)):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(ctx)
            shortcut.activated.connect(slot)

    def _restore(self) -> None:
        chats = self.store.chats()
        if chats:
            self.open_chat(chats[0].chat_id)
        else:
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

    def focus_composer(self) -> None:
        """Put the cursor in the current conversation's message box."""
        self.current().prompt.setFocus()

    def new_conversation(self) -> Conversation:
        """Open a new chat tab, select it and focus its message box."""
        self._count += 1
        return self._add(Conversation(self._bridge, self.store, clock=self._clock), "New chat")

    def open_chat(self, chat_id: str) -> Conversation | None:
        """Select the tab of saved chat ``chat_id``, opening it first; None if it is gone."""
        for conv in self.conversations:
            if conv.chat_id == chat_id:
                self.tabs.setCurrentWidget(conv)
                conv.prompt.setFocus()
                return conv
        chat = self.store.get(chat_id)
        if chat is None:
            return None
        conv = Conversation(self._bridge, self.store, chat_id=chat_id, clock=self._clock)
        return self._add(conv, chat.title)

    def _add(self, conv: Conversation, title: str) -> Conversation:
        index = self.tabs.addTab(conv, title)
        self.tabs.setTabToolTip(index, title)
        conv.titleSuggested.connect(lambda t: self._retitle(conv, t))
        conv.saved.connect(self._on_saved)
        conv.taskLabelled.connect(self.taskLabelled)
        conv.actionRequested.connect(lambda action, arg: self._on_action(conv, action, arg))
        conv.transcript.pendingChanged.connect(lambda unread: self._mark(conv, unread))
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

    def _mark(self, conv: Conversation, unread: bool) -> None:
        """Show a dot on the tab of a hidden chat that received text; clear it when shown."""
        index = self.tabs.indexOf(conv)
        if index >= 0:
            self.tabs.setTabIcon(index, QIcon(dot_pixmap(QColor(BLUE))) if unread else QIcon())

    def _close_current(self) -> None:
        self.close_conversation(self.tabs.currentIndex())

    def _on_pools(self, _pools: Sequence[PoolView]) -> None:
        pools = self._bridge.pools()
        for conv in self.conversations:
            conv.set_pools(pools)

    def _on_saved(self, chat_id: str) -> None:
        self.sidebar.refresh()
        self.sidebar.select(chat_id)

    def _on_tab(self, _index: int) -> None:
        widget = self.tabs.currentWidget()
        if isinstance(widget, Conversation) and widget.chat_id:
            self.sidebar.select(widget.chat_id)
        else:  # a new chat is not in the list until its first message
            self.sidebar.select_none()

    def _on_deleted(self, chat_id: str) -> None:
        for conv in self.conversations:
            if conv.chat_id == chat_id:
                self.close_conversation(self.tabs.indexOf(conv))

    def _on_renamed(self, chat_id: str, title: str) -> None:
        for conv in self.conversations:
            if conv.chat_id == chat_id:
                self._retitle(conv, title)

    def _on_action(self, conv: Conversation, action: str, last_answer: str) -> None:
        if action == Action.NEW_CHAT:
            self.new_conversation()
        elif action == Action.CONTINUE_NEW_CHAT:
            self.continue_in_new_chat(conv)
        else:
            self.navigate.emit(action)

    def continue_in_new_chat(self, conv: Conversation) -> None:
        """Ask the pool of ``conv``'s last answer for a summary of it ("Summarising…" in
        its status line), then open a new chat whose system prompt carries it. When the
        summary fails, ``conv`` says why and offers a plain new chat. Never blocks."""
        conv.status.setText(SUMMARISING)
        conv.error_bar.hide()
        pool_id = conv.answered_on
        ctx = next((p.ctx for p in self._bridge.pools() if p.pool_id == pool_id), 0)
        system = conv.system_prompt.toPlainText()  # read now: the tab may close meanwhile
        work = summarise_history(self._bridge, conv.history, pool_id, ctx)
        self._bridge.run(self._continue(conv, work, system), "summarising the chat")

    async def _continue(self, conv: Conversation, work: Awaitable[str], system: str) -> None:
        try:
            summary = await work
        except OrchError as exc:
            why = conv.explain_error(exc.code, exc.message, exc.pool_id, exc.retry_after_ms)
            sentence = TOO_LONG if exc.message.startswith(TOO_LONG) else why.sentence
            self._summary_failed(conv, sentence, why.details)
            return
        if not summary:
            self._summary_failed(conv, "The model wrote nothing.", "empty summary")
            return
        if conv.alive:
            conv.status.setText("Continued in a new chat.")
        new = self.new_conversation()
        new.system_prompt.setPlainText(carried_system_prompt(system, summary))
        new.notice(CARRIED)
        new.prompt.setPlainText("Please continue.")
        new.prompt.setFocus()

    def _summary_failed(self, conv: Conversation, sentence: str, details: str) -> None:
        lead = f"{SUMMARY_FAILED} {sentence[0].lower()}{sentence[1:]}"
        if not conv.alive:  # its tab was closed meanwhile
            self._bridge.report_error(lead)
            return
        conv.status.setText("No summary.")
        conv.error_bar.show_error(Explained(lead, Action.NEW_CHAT, None, details))
