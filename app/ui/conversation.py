"""One chat conversation: options, transcript, composer, streaming from the core.

Each turn sends the whole conversation as ``messages``, trimmed to the pool's
context (``chat_logic.trim_to_context``). Events arrive as plain calls per batch
(``Bridge.follow``, no asyncio task per stream). Tokens are never written one by one:
the transcript buffers them and appends them on a 25 ms timer; a finished
answer is rendered from Markdown once (see ``transcript``).
"""

from __future__ import annotations

import contextlib
import html
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.orchestrator.contracts import (
    AdmissionResponse,
    ChatMessage,
    DecisionRecord,
    ErrorCode,
    FinishReason,
    PoolView,
    TaskRequest,
    TaskView,
)
from app.orchestrator.errors import OrchError
from app.orchestrator.events import END, ERROR, STARTED, TOKEN, EndData, TaskEvent
from app.orchestrator.lifecycle import TaskState
from app.ui.bridge import Bridge
from app.ui.chat_logic import (
    CONTEXT_CUT,
    answer_stats,
    build_request,
    context_cut,
    context_of,
    paired,
    queued_text,
    tab_title,
    trim_to_context,
)
from app.ui.chat_options import ChatOptionsRow, Composer
from app.ui.chat_store import ChatStore, StoredMessage
from app.ui.error_bar import ErrorBar
from app.ui.error_text import Action, Explained, explain
from app.ui.icons import GREY
from app.ui.transcript import FLUSH_MS, Transcript

Clock = Callable[[], float]
EMPTY_CHAT = (
    "Ask anything: type below and press Enter. Choose a model or pool above, and a "
    "system prompt under Options. Chats are saved on the left."
)
NO_POOL = "No pool is running yet: add a model in Pools, then come back here."
CONTEXT_FULL = "This conversation is full."
TRIM_MARKER = "Earlier messages not sent to the model (they no longer fit its context)."


class _Life:
    """Whether a conversation's widgets still exist, and how to stop following its stream.

    Plain Python, so ``end`` may run from ``destroyed`` after the C++ side is gone.
    """

    def __init__(self) -> None:
        self.alive = True
        self.stop: Callable[[], None] | None = None

    def end(self, *_: object) -> None:
        self.alive = False
        stop, self.stop = self.stop, None
        if stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                stop()


class Conversation(QWidget):
    """One chat: options, transcript, composer, send / stop / regenerate / edit.

    Emits ``titleSuggested(title)``, ``saved(chat_id)`` after a message is stored,
    and ``actionRequested(action, arg)`` for what the panel or window handles.
    """

    titleSuggested = Signal(str)
    saved = Signal(str)
    actionRequested = Signal(str, str)
    taskLabelled = Signal(str, str)  # task id, the chat's title

    def __init__(
        self,
        bridge: Bridge,
        store: ChatStore,
        parent: QWidget | None = None,
        *,
        chat_id: str | None = None,
        clock: Clock = time.monotonic,
        flush_ms: int = FLUSH_MS,
    ) -> None:
        super().__init__(parent)
        self._bridge, self._store, self._clock = bridge, store, clock
        self.chat_id = chat_id
        self.session_id = str(uuid.uuid4())
        self.messages: list[StoredMessage] = []
        self.task_id: str | None = None
        self._sending = False
        self.last_stats = ""
        self.dropped = 0
        self._life = _Life()
        self.destroyed.connect(self._life.end)
        self._pool_key: tuple[tuple[str, str, int], ...] = ()
        self._answer: list[str] = []
        self._t_sent = 0.0
        self._t_first: float | None = None
        self._predicted_ms = 0
        self._pool_id = ""
        self._max_tokens = 0
        self._build(flush_ms)
        self._shortcuts()
        self.set_pools(bridge.pools())
        bridge.tasksChanged.connect(self._on_tasks)
        if chat_id is not None:
            self._load(chat_id)

    # ---- construction -----------------------------------------------------------

    def _build(self, flush_ms: int) -> None:
        self.opts = ChatOptionsRow()
        o = self.opts
        self.target, self.priority, self.mode = o.target, o.priority, o.mode
        self.pin_pool, self.pool_choice, self.seed = o.pin_pool, o.pool_choice, o.seed
        self.max_tokens, self.temperature = o.max_tokens, o.temperature
        self.system_prompt = o.system_prompt
        self.transcript = Transcript(flush_ms=flush_ms)
        self.transcript.setPlaceholderText(EMPTY_CHAT)
        self.transcript.linkClicked.connect(self._on_link)
        self.error_bar = ErrorBar()
        self.error_bar.actionRequested.connect(self._on_action)
        self.status = QLabel("Type a message and press Enter.")
        self.status.setWordWrap(True)
        self.status.setAccessibleName("Task status")
        self.trim_label = QLabel(TRIM_MARKER)
        self.trim_label.setStyleSheet(f"color: {GREY}")
        self.trim_label.setVisible(False)
        self.prompt = Composer()
        self.prompt.setPlaceholderText("Message… (Enter sends, Shift+Enter new line, Esc stops)")
        self.prompt.setAccessibleName("Message")
        self.prompt.setMaximumHeight(96)
        self.prompt.sendRequested.connect(self.send)
        box = QVBoxLayout(self)
        box.addWidget(self.opts)
        box.addWidget(self.transcript, 1)
        box.addWidget(self.error_bar)
        box.addWidget(self.trim_label)
        box.addWidget(self.status)
        box.addLayout(self._composer_row())

    def _composer_row(self) -> QHBoxLayout:
        self.send_button = QPushButton("Send")
        self.send_button.setToolTip("Send (Enter)")
        self.cancel_button = QPushButton("Stop")
        self.cancel_button.setToolTip("Stop the answer (Esc)")
        self.cancel_button.setEnabled(False)
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setToolTip("Ask again for the last answer")
        self.edit_button = QPushButton("Edit last")
        self.edit_button.setToolTip("Put your last message back in the box to change and resend")
        self.send_button.clicked.connect(self.send)
        self.cancel_button.clicked.connect(self.cancel)
        self.regenerate_button.clicked.connect(self.regenerate)
        self.edit_button.clicked.connect(self.edit_last)
        buttons = QVBoxLayout()
        for button in (self.send_button, self.cancel_button):
            buttons.addWidget(button)
        side = QVBoxLayout()
        for button in (self.regenerate_button, self.edit_button):
            side.addWidget(button)
        row = QHBoxLayout()
        row.addLayout(side)
        row.addWidget(self.prompt, 1)
        row.addLayout(buttons)
        self._update_buttons()
        return row

    def _shortcuts(self) -> None:
        ctx = Qt.ShortcutContext.WidgetWithChildrenShortcut
        shortcut = QShortcut(QKeySequence("Esc"), self)
        shortcut.setContext(ctx)
        shortcut.activated.connect(self.cancel)

    # ---- state -------------------------------------------------------------------

    @property
    def history(self) -> list[ChatMessage]:
        """Return the conversation so far (user and assistant turns)."""
        return [ChatMessage(role=m.role, content=m.content) for m in self.messages]

    @property
    def busy(self) -> bool:
        """Return True while a message is being submitted or its task is queued or running."""
        return self.task_id is not None or self._sending

    def set_pools(self, pools: list[PoolView]) -> None:
        """Offer ``pools`` in the pickers, keeping the current choices where possible."""
        key = tuple((p.pool_id, p.model, p.ctx) for p in pools)
        if key != self._pool_key:
            self._pool_key = key
            self.opts.set_pools(pools)
            self.transcript.setPlaceholderText(EMPTY_CHAT if pools else NO_POOL)

    def _update_buttons(self) -> None:
        idle = not self.busy
        self.send_button.setEnabled(idle)
        self.cancel_button.setEnabled(not idle)
        last = self.messages[-1].role if self.messages else ""
        self.regenerate_button.setEnabled(idle and last == "assistant")
        self.edit_button.setEnabled(idle and any(m.role == "user" for m in self.messages))

    # ---- loading and rendering -------------------------------------------------------

    def _load(self, chat_id: str) -> None:
        chat = self._store.get(chat_id)
        if chat is None:
            self.chat_id = None
            return
        self.system_prompt.setPlainText(chat.system_prompt)
        self.messages = self._store.messages(chat_id)
        self.render_all()
        self._update_buttons()
        if self.messages:
            self.status.setText("Restored. Type a message to continue.")

    def render_all(self) -> None:
        """Render every stored message once (Markdown), e.g. after loading or a rewind."""
        self.transcript.clear()
        for index, msg in enumerate(self.messages):
            self._render(index, msg)
        self.transcript.scroll_to_end()

    def _render(self, index: int, msg: StoredMessage) -> None:
        if msg.role == "user":
            self._header("You", index)
            self.transcript.append_text(msg.content)
        else:
            self._header("Assistant", None)
            self.transcript.markdown(msg.content)
            self._stats_line(msg.stats, index)

    def _stats_line(self, stats: str, index: int) -> None:
        text = f"{html.escape(stats)} · " if stats else ""
        self.transcript.append_html(
            f"<span style='color:{GREY}'>{text}</span><a href='copy:{index}'>copy</a>"
        )

    def _header(self, who: str, index: int | None, extra: str = "") -> None:
        if not self.transcript.document().isEmpty():
            self.transcript.append_text("")
        copy = f" <a href='copy:{index}'>copy</a>" if index is not None else ""
        self.transcript.append_html(
            f"<b>{who}</b><span style='color:{GREY}'>{extra}</span>"
            f"<span style='font-size:small'>{copy}</span>"
        )

    # ---- sending -------------------------------------------------------------------

    def send(self) -> None:
        """Submit the message box as the next turn and start streaming. Never blocks."""
        text = self.prompt.toPlainText().strip()
        if self.busy or not text:
            return
        self._submit(text, self.history, clear_prompt=True)

    def regenerate(self) -> None:
        """Drop the last answer and ask for it again with the same message."""
        if self.busy or not self.messages or self.messages[-1].role != "assistant":
            return
        self._rewind(len(self.messages) - 1)
        text = self.messages[-1].content
        self._rewind(len(self.messages) - 1)
        self._submit(text, self.history)

    def edit_last(self) -> None:
        """Put the last user message back in the box and drop it and what follows."""
        users = [i for i, m in enumerate(self.messages) if m.role == "user"]
        if self.busy or not users:
            return
        text = self.messages[users[-1]].content
        self._rewind(users[-1])
        self.prompt.setPlainText(text)
        self.prompt.setFocus()

    def _rewind(self, keep: int) -> None:
        del self.messages[keep:]
        if self.chat_id is not None:
            self._store.truncate(self.chat_id, keep)
        self.render_all()
        self._update_buttons()

    def _submit(self, text: str, history: list[ChatMessage], *, clear_prompt: bool = False) -> None:
        """Start submitting ``text`` as the next turn (busy until admitted or refused)."""
        self._sending = True
        self._update_buttons()
        self._bridge.run(self._send_turn(text, history, clear_prompt), "sending the message")

    async def _send_turn(self, text: str, history: list[ChatMessage], clear_prompt: bool) -> None:
        try:
            opts = self.opts.options()
            ctx = context_of(self._bridge.pools(), opts)
            system = self.system_prompt.toPlainText()
            trimmed = trim_to_context(system, paired(history), text, ctx, opts.max_tokens)
            req = build_request(trimmed.messages, opts, self.session_id)
            self.taskLabelled.emit(str(req.task_id), self._title_for(text))
            resp = await self._admit(req)
        except OrchError as exc:
            self._show_error(exc.code, exc.message, exc.pool_id, exc.retry_after_ms)
            self.status.setText("Not sent.")
            return
        except ValueError as exc:  # our own option checks say what to change
            self.error_bar.show_offer(str(exc).splitlines()[0], [])
            return
        finally:
            self._sending = False
            self._update_buttons()
        if clear_prompt:
            self.prompt.clear()
        self.error_bar.hide()
        self._max_tokens = opts.max_tokens
        self._show_trim(trimmed.dropped)
        self._save(StoredMessage("user", text))
        self._begin_turn(text, resp)

    def _title_for(self, text: str) -> str:
        chat = self._store.get(self.chat_id) if self.chat_id else None
        return f"Chat: {chat.title if chat else tab_title(text, 40)}"

    async def _admit(self, req: TaskRequest) -> AdmissionResponse:
        """Submit; a refusal that a fresh session avoids (turn or budget limits of the
        session) is retried once with a new session id. Raises OrchError."""
        try:
            return await self._bridge.submit(req)
        except OrchError as exc:
            if exc.code != ErrorCode.ADMISSION_REJECT or exc.retry_after_ms:
                raise
            self.session_id = str(uuid.uuid4())
            retry = req.model_copy(update={"session_id": self.session_id})
            return await self._bridge.submit(retry)

    def _show_trim(self, dropped: int) -> None:
        if dropped and not self.dropped:
            self.transcript.notice(f"— {TRIM_MARKER} —")
        self.dropped = dropped
        self.trim_label.setText(f"{TRIM_MARKER} ({dropped} left out)")
        self.trim_label.setVisible(dropped > 0)

    def _save(self, msg: StoredMessage, pool: str = "") -> None:
        self.messages.append(msg)
        if self.chat_id is None:
            title = tab_title(msg.content, 40)
            chat = self._store.create(title, self.system_prompt.toPlainText())
            self.chat_id = chat.chat_id
            self.titleSuggested.emit(tab_title(msg.content))
        else:
            self._store.set_system_prompt(self.chat_id, self.system_prompt.toPlainText())
        model = next((m for p, m, _ in self._pool_key if p == pool), "")
        self._store.add_message(self.chat_id, msg, model=model, pool=pool)
        self.saved.emit(self.chat_id)

    def _begin_turn(self, text: str, resp: AdmissionResponse) -> None:
        self.task_id = str(resp.task_id)
        self._answer = []
        self._t_sent, self._t_first = self._clock(), None
        self._pool_id = resp.pool_id
        self._predicted_ms = resp.predicted_start_ms
        self._header("You", len(self.messages) - 1)
        self.transcript.append_text(text)
        self._header_shown = False
        self._update_buttons()
        self.status.setText(queued_text(resp.pool_id, resp.queue_position, self._predicted_ms))
        self.transcript.start_stream()
        self._life.stop = self._bridge.follow(self.task_id, self._on_events, self._on_stream_end)

    def cancel(self) -> None:
        """Ask the core to stop this conversation's answer. Never blocks."""
        if self.task_id is None:
            return
        self._bridge.run(_quietly(self._bridge.cancel(self.task_id)), "stopping the answer")
        self.status.setText("Stopping…")

    # ---- streaming ------------------------------------------------------------------

    def _on_events(self, batch: Sequence[TaskEvent]) -> None:
        """The bridge's plain call per batch of this turn's events (Qt thread)."""
        for event in batch:
            self._on_event(event)

    def _on_stream_end(self, error: OrchError | None) -> None:
        """The bridge's call after the last batch: show a stream failure, end the turn."""
        self._life.stop = None
        if not self._life.alive:
            return
        if error is not None:
            self.flush()
            self._show_error(error.code, error.message, error.pool_id)
        self._end_turn()

    def _on_event(self, event: TaskEvent) -> None:
        if event.kind == TOKEN:
            if self._t_first is None:
                self._t_first = self._clock()
                self._show_header(self._pool_id)
            self.transcript.add(event.data["t"])
            self._answer.append(event.data["t"])
        elif event.kind == STARTED:
            self._pool_id = event.data["pool_id"] or self._pool_id
            self.status.setText(f"Starting on {self._pool_id}…")
        elif event.kind == END:
            self._on_end(event.data)
        elif event.kind == ERROR:
            self.flush()
            data = event.data
            self._show_error(data["code"], data["message"], data["pool_id"])
            self.status.setText("The answer failed.")

    def _show_header(self, pool_id: str) -> None:
        if self._header_shown:
            return
        self._header_shown = True
        why = self._decision_summary()
        where = f" · on {html.escape(pool_id)}" if pool_id else ""
        self._header("Assistant", None, where)
        self.transcript.begin_answer()
        self.status.setText(f"Answering on {pool_id}" + (f" — {why}" if why else ""))

    def _decision_summary(self) -> str:
        if self.task_id is None:
            return ""
        record = self._bridge.decision_for(self.task_id)
        return record.summary if isinstance(record, DecisionRecord) else ""

    def _on_end(self, data: EndData) -> None:
        self.transcript.end_answer("".join(self._answer))
        ttft = None if self._t_first is None else (self._t_first - self._t_sent) * 1000
        self.last_stats = answer_stats(ttft, data)
        self._stats_line(self.last_stats, len(self.messages))
        canceled = data["finish_reason"] == FinishReason.CANCELED
        self.status.setText("Stopped." if canceled else "Done.")
        if context_cut(data, self._max_tokens):
            self.status.setText("Cut off: the model's context is full.")
            self.transcript.notice(CONTEXT_CUT, error=True)
            self.error_bar.show_offer(CONTEXT_FULL, [Action.NEW_CHAT, Action.CONTINUE_NEW_CHAT])

    def _end_turn(self) -> None:
        if not self._life.alive:
            return
        self.transcript.stop_stream()
        if self._answer:
            answer = "".join(self._answer)
            self._save(StoredMessage("assistant", answer, self.last_stats), self._pool_id)
            self.transcript.scroll_to_end()
        self.task_id = None
        self.last_stats = self.last_stats if self._answer else ""
        self._update_buttons()

    def _on_tasks(self, views: Sequence[TaskView]) -> None:
        if self.task_id is None or self._header_shown or self._t_first is not None:
            return
        own = next((v for v in views if v.task_id == self.task_id), None) or self._own_view()
        if own is not None and own.state is TaskState.QUEUED and own.queue_position is not None:
            elapsed = (self._clock() - self._t_sent) * 1000
            eta = int(max(0.0, self._predicted_ms - elapsed))
            self.status.setText(queued_text(own.pool_id or self._pool_id, own.queue_position, eta))

    def _own_view(self) -> TaskView | None:
        return next((t for t in self._bridge.tasks(64) if t.task_id == self.task_id), None)

    # ---- errors, links and actions ----------------------------------------------------

    def _show_error(
        self,
        code: str,
        message: str,
        pool_id: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        self.error_bar.show_error(self.explain_error(code, message, pool_id, retry_after_ms))

    def explain_error(
        self, code: str, message: str, pool_id: str | None = None, retry_after_ms: int | None = None
    ) -> Explained:
        """Return the sentence and action for an error, naming a paused pool that could
        have answered (see ``error_text.explain``)."""
        paused = next((p.pool_id for p in self._bridge.pools() if p.draining), None)
        return explain(
            code, message, pool_id=pool_id, retry_after_ms=retry_after_ms, paused_pool=paused
        )

    def _on_link(self, href: str) -> None:
        kind, _, arg = href.partition(":")
        if kind == "copy" and arg.isdigit() and int(arg) < len(self.messages):
            self.copy_message(int(arg))

    def copy_message(self, index: int) -> None:
        """Put message ``index``'s text on the clipboard."""
        QGuiApplication.clipboard().setText(self.messages[index].content)
        self.status.setText("Copied.")

    def _on_action(self, action: str, pool_id: str) -> None:
        if action == Action.RESUME_POOL and pool_id:
            self._bridge.run(self._bridge.resume(pool_id), f"resuming pool {pool_id}")
            self.status.setText(f"Pool {pool_id} resumed. Send again.")
        elif action == Action.REGENERATE:
            self._retry_last()
        else:
            self.actionRequested.emit(action, self.last_answer())

    def _retry_last(self) -> None:
        if self.messages and self.messages[-1].role == "assistant":
            self.regenerate()
        elif self.messages and self.messages[-1].role == "user":
            text = self.messages[-1].content
            self._rewind(len(self.messages) - 1)
            self._submit(text, self.history)

    @property
    def alive(self) -> bool:
        """Return False once the conversation was closed (its widgets may be gone)."""
        return self._life.alive

    @property
    def answered_on(self) -> str:
        """Return the pool of the latest answer, "" before the first one."""
        return self._pool_id

    def last_answer(self) -> str:
        """Return the last assistant message, "" when there is none."""
        return next((m.content for m in reversed(self.messages) if m.role == "assistant"), "")

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


async def _quietly(command: Awaitable[None]) -> None:
    """Await ``command``; a refusal (the task already finished) needs no word."""
    with contextlib.suppress(OrchError):
        await command
