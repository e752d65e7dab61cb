"""Chat panel: the request it sends, the stream it renders, cancel, errors, tabs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any

import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QGuiApplication, QTextFormat
from PySide6.QtTest import QTest

from app.orchestrator.contracts import (
    AdmissionResponse,
    ChatMessage,
    DecisionRecord,
    PlacementMode,
    PlacementOverrides,
    Priority,
    SessionBudgets,
    SessionInfo,
    TaskRequest,
    TaskView,
)
from app.orchestrator.errors import OrchError, QueueFull
from app.orchestrator.events import (
    END,
    ERROR,
    TOKEN,
    EndData,
    EndEvent,
    ErrorEvent,
    TaskEvent,
)
from app.ui.chat_logic import (
    ChatOptions,
    answer_stats,
    build_request,
    parse_seed,
    placement_for,
    tab_title,
)
from app.ui.chat_panel import ChatPanel, Conversation
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge, pool_view
from tests.ui.support import script, type_and_send

TOKENS = [f"tok{i} " for i in range(200)]


class StepClock:
    """A clock that advances 0.1 s per reading."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.1
        return self.now


@pytest.fixture
def make_panel(qtbot: Any) -> Iterator[Callable[..., ChatPanel]]:
    """Build ChatPanels that stay alive for the whole test."""
    alive: list[ChatPanel] = []

    def build(bridge: FakeBridge, **kw: Any) -> ChatPanel:
        panel = ChatPanel(bridge, **kw)
        qtbot.addWidget(panel)
        alive.append(panel)
        return panel

    yield build
    alive.clear()


def transcript(conv: Conversation) -> str:
    return conv.transcript.toPlainText()


def two_pools() -> list[Any]:
    return [pool_view("gpu0", model="qwen"), pool_view("gpu1", device_mask="1", model="llama")]


# ---------------------------------------------------------------- pure mapping


def test_placement_modes_map_to_overrides() -> None:
    assert placement_for("auto", None, ["gpu0"]) == PlacementOverrides()
    assert placement_for("pin", "gpu1", []) == PlacementOverrides(
        mode=PlacementMode.PIN, pin_pool_id="gpu1"
    )
    assert placement_for("prefer", None, ["gpu0", "gpu1"]) == PlacementOverrides(
        mode=PlacementMode.PREFER, prefer_pools=["gpu0", "gpu1"]
    )
    assert placement_for("avoid", None, ["gpu0"]) == PlacementOverrides(
        mode=PlacementMode.AUTO, avoid_pools=["gpu0"]
    )
    with pytest.raises(ValueError, match="pin"):
        placement_for("pin", None, [])
    with pytest.raises(ValueError, match="prefer"):
        placement_for("prefer", None, [])


def test_build_request_targets_and_history() -> None:
    opts = ChatOptions(target="pool:gpu1", priority=Priority.BATCH, seed=7, max_tokens=9)
    req = build_request([ChatMessage(role="user", content="hi")], opts, "s-1")
    assert req.model_ref == "gpu1"
    assert req.priority is Priority.BATCH
    assert (req.seed, req.max_tokens, req.session_id) == (7, 9, "s-1")
    hi = [ChatMessage(role="user", content="hi")]
    assert build_request(hi, ChatOptions(target="model:qwen"), "s").model_ref == "qwen"
    assert build_request(hi, ChatOptions(), "s").model_ref is None


def test_tab_titles_are_short() -> None:
    assert tab_title("Tell me\n a story") == "Tell me a story"
    assert tab_title("x" * 40) == "x" * 23 + "…"


def test_seed_parsing_and_answer_stats() -> None:
    assert parse_seed("") is None
    assert parse_seed(" 42 ") == 42
    for bad in ("-1", "x", str(2**32)):
        with pytest.raises(ValueError, match="Seed"):
            parse_seed(bad)
    end: EndData = {
        "tokens_out": 64,
        "decode_time_ms": 800,
        "decode_ms": 800,
        "finish_reason": "stop",
    }
    assert answer_stats(35.2, end) == "TTFT 35 ms · 80.0 tokens/s · 64 tokens · stop"


# ---------------------------------------------------------------- the request sent


def test_send_builds_the_request_from_the_pickers(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    bridge.pool_list = two_pools()
    conv = make_panel(bridge).current()
    conv.target.setCurrentIndex(conv.target.findData("model:llama"))
    conv.priority.setCurrentIndex(conv.priority.findData("batch"))
    conv.mode.setCurrentIndex(conv.mode.findData("pin"))
    conv.pin_pool.setCurrentIndex(conv.pin_pool.findData("gpu1"))
    conv.seed.setText("1234")
    conv.max_tokens.setValue(77)
    conv.temperature.setValue(0.3)
    type_and_send(conv, "Hello there", qloop)
    [req] = bridge.submitted
    assert req.messages is not None
    assert [(m.role, m.content) for m in req.messages] == [("user", "Hello there")]
    assert req.model_ref == "llama"
    assert req.priority is Priority.BATCH
    assert req.placement == PlacementOverrides(mode=PlacementMode.PIN, pin_pool_id="gpu1")
    assert (req.seed, req.max_tokens) == (1234, 77)
    assert req.temperature == pytest.approx(0.3)
    assert req.session_id == conv.session_id
    assert conv.prompt.toPlainText() == ""


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("prefer", PlacementOverrides(mode=PlacementMode.PREFER, prefer_pools=["gpu1"])),
        ("avoid", PlacementOverrides(mode=PlacementMode.AUTO, avoid_pools=["gpu1"])),
    ],
)
def test_prefer_and_avoid_use_the_ticked_pools(
    make_panel: Any, qloop: QtAsync, mode: str, expected: PlacementOverrides
) -> None:
    bridge = FakeBridge()
    bridge.pool_list = two_pools()
    conv = make_panel(bridge).current()
    conv.mode.setCurrentIndex(conv.mode.findData(mode))
    assert not conv.pool_choice.isHidden() and conv.pin_pool.isHidden()
    conv.pool_choice.item(1).setCheckState(Qt.CheckState.Checked)
    type_and_send(conv, "x", qloop)
    assert bridge.submitted[0].placement == expected


def test_prefer_without_a_ticked_pool_is_refused_inline(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    conv = make_panel(bridge).current()
    conv.mode.setCurrentIndex(conv.mode.findData("prefer"))
    type_and_send(conv, "x", qloop)
    assert bridge.submitted == []
    assert "needs at least one ticked pool" in conv.error_bar.sentence.text()
    assert conv.error_bar.isVisibleTo(conv)
    assert conv.prompt.toPlainText() == "x"


def test_multi_turn_sends_the_conversation_in_one_session(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    bridge.default_script = script(["Hi", " you"])
    info = SessionInfo(
        session_id="s",
        ttl_ms_remaining=1000,
        turns=1,
        kv_bytes=0,
        kv_warmth=True,
        budgets=SessionBudgets(),
    )

    async def session(session_id: str) -> SessionInfo | None:
        return info

    bridge.session = session  # type: ignore[method-assign]
    conv = make_panel(bridge).current()
    type_and_send(conv, "first", qloop)
    qloop.wait_until(lambda: not conv.busy)
    type_and_send(conv, "second", qloop)
    qloop.wait_until(lambda: not conv.busy)
    first, second = bridge.submitted
    assert second.messages is not None
    assert [(m.role, m.content) for m in second.messages] == [
        ("user", "first"),
        ("assistant", "Hi you"),
        ("user", "second"),
    ]
    assert first.session_id == second.session_id == conv.session_id
    assert "session expired" not in transcript(conv)


def test_a_session_out_of_turns_is_continued_in_a_new_session(
    make_panel: Any, qloop: QtAsync
) -> None:
    class TurnLimited(FakeBridge):
        def submit(self, req: TaskRequest) -> Coroutine[Any, Any, AdmissionResponse]:
            if len(self.submitted) == 1 and req.session_id == self.submitted[0].session_id:
                self.submitted.append(req)
                raise OrchError("ADMISSION_REJECT", "session has used all 1 turns", status=400)
            return super().submit(req)

    bridge = TurnLimited()
    bridge.default_script = script(["ok"])
    conv = make_panel(bridge).current()
    type_and_send(conv, "first", qloop)
    qloop.wait_until(lambda: not conv.busy)
    type_and_send(conv, "second", qloop)
    qloop.wait_until(lambda: not conv.busy)
    first, refused, second = bridge.submitted
    assert first.session_id == refused.session_id != second.session_id == conv.session_id
    assert second.messages is not None and len(second.messages) == 3
    assert conv.error_bar.isHidden()


def test_enter_sends_and_shift_enter_makes_a_new_line(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    panel = make_panel(bridge)
    panel.show()
    panel.activateWindow()
    assert QTest.qWaitForWindowActive(panel, 2000)
    conv = panel.current()
    conv.prompt.setFocus()
    QTest.keyClicks(conv.prompt, "line one")
    QTest.keyClick(conv.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    QTest.keyClicks(conv.prompt, "line two")
    assert bridge.submitted == []
    assert conv.prompt.toPlainText() == "line one\nline two"
    QTest.keyClick(conv.prompt, Qt.Key.Key_Return)
    qloop.wait_until(lambda: not conv.busy)
    [req] = bridge.submitted
    assert req.messages is not None and req.messages[-1].content == "line one\nline two"
    assert conv.prompt.toPlainText() == ""


def test_ctrl_enter_sends(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    panel = make_panel(bridge)
    panel.show()
    panel.activateWindow()
    assert QTest.qWaitForWindowActive(panel, 2000)
    conv = panel.current()
    conv.prompt.setFocus()
    conv.prompt.setPlainText("via keyboard")
    QTest.keyClick(conv.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qloop.wait_until(lambda: not conv.busy)
    assert [r.messages[0].content for r in bridge.submitted if r.messages] == ["via keyboard"]


# ---------------------------------------------------------------- rendering the stream


def test_a_scripted_stream_renders_coalesced(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    bridge.default_script = script(TOKENS)
    conv = make_panel(bridge, clock=StepClock()).current()
    changes: list[int] = []
    conv.transcript.document().contentsChange.connect(lambda *_: changes.append(1))
    type_and_send(conv, "go", qloop)
    qloop.wait_until(lambda: not conv.busy)
    assert "".join(TOKENS).strip() in transcript(conv)
    assert 1 <= conv.transcript.flushes <= 10
    assert conv.transcript.renders == 1  # the finished answer, once
    assert len(changes) < 30 < len(TOKENS)
    assert conv.last_stats == "TTFT 100 ms · 400.0 tokens/s · 200 tokens · stop"
    assert conv.last_stats in transcript(conv)
    assert conv.status.text() == "Done."


def test_paced_tokens_are_flushed_on_the_timer_not_per_token(
    make_panel: Any, qloop: QtAsync
) -> None:
    bridge = FakeBridge()
    tokens = TOKENS[:60]
    bridge.default_script = script(tokens)
    bridge.delay = 0.003
    conv = make_panel(bridge).current()
    type_and_send(conv, "go", qloop)
    qloop.wait_until(lambda: not conv.busy)
    assert "".join(tokens).strip() in transcript(conv)
    assert 1 < conv.transcript.flushes < len(tokens) / 3


def test_queued_status_then_started_pool_and_reason(make_panel: Any, qloop: QtAsync) -> None:
    class Queued(FakeBridge):
        async def submit(self, req: TaskRequest) -> AdmissionResponse:
            await super().submit(req)
            record = DecisionRecord(
                at=0.0,
                task_id=str(req.task_id),
                priority=req.priority,
                mode=PlacementMode.AUTO,
                outcome="admitted",
                pool_id="gpu1",
                selected_pool_id="gpu1",
                no_capacity_reason=None,
                candidates_considered=2,
                filters_applied=["device_mask"],
                tie_breakers_applied=["most_free_vram"],
                pinned=False,
                fallback_used=False,
                candidates=[],
                summary="gpu1: most free VRAM; gpu0 skipped: device mask",
            )
            # 250 decisions of other tasks come first: the header looks its task up by id
            others = [record.model_copy(update={"task_id": f"other-{i}"}) for i in range(250)]
            self.decision_list.extend([*others, record])
            return AdmissionResponse(
                task_id=req.task_id, queue_position=3, predicted_start_ms=1500, pool_id="gpu1"
            )

    bridge = Queued()
    bridge.default_script = script(["a"], pool_id="gpu1")
    bridge.delay = 0.2
    conv = make_panel(bridge).current()
    type_and_send(conv, "go", qloop)
    assert conv.status.text() == "4th in line on gpu1, about 2 s"
    moved = TaskView(
        task_id=str(conv.task_id),
        state="queued",
        priority=Priority.INTERACTIVE,
        pool_id="gpu1",
        session_id=None,
        identity="gui",
        correlation_id="c",
        created_at=0.0,
        queue_position=1,
        queued_ms=None,
        ttft_ms=None,
        decode_time_ms=None,
        tokens_in=1,
        tokens_out=0,
        finish_reason=None,
        error=None,
        decision_summary="",
    )
    bridge.tasksChanged.emit((moved,))
    assert conv.status.text().startswith("2nd in line on gpu1, about ")
    assert "starting" not in conv.status.text().lower()
    qloop.wait_until(lambda: conv.status.text().startswith("Starting on gpu1"))
    qloop.wait_until(lambda: conv.status.text().startswith("Answering on gpu1"))
    assert "gpu1: most free VRAM; gpu0 skipped: device mask" in conv.status.text()
    assert "Assistant · on gpu1" in transcript(conv)
    qloop.wait_until(lambda: not conv.busy)


def test_an_error_event_is_shown_with_code_and_message(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    bridge.default_script = [
        *script(["partial"])[:-1],
        ErrorEvent(
            ERROR,
            {
                "code": "WORKER_RESET",
                "message": "engine process exited",
                "retriable": True,
                "engine": None,
                "pool_id": None,
                "retry_after_ms": None,
            },
        ),
    ]
    conv = make_panel(bridge).current()
    type_and_send(conv, "go", qloop)
    qloop.wait_until(lambda: not conv.busy)
    assert "partial" in transcript(conv)
    bar = conv.error_bar
    assert bar.sentence.text().startswith("The engine of the pool restarted while answering")
    assert bar.action_button.text() == "Try again"
    assert bar.details.isHidden()
    bar.details_button.click()
    assert bar.details.text() == "WORKER_RESET: engine process exited"
    assert "WORKER_RESET" not in bar.sentence.text()
    assert conv.status.text() == "The answer failed."


def test_a_full_queue_is_explained_with_its_wait_and_settings(
    make_panel: Any, qloop: QtAsync
) -> None:
    bridge = FakeBridge()
    bridge.submit_error = QueueFull(
        "queue for pool gpu0 (interactive) is full: 16 of 16",
        pool_id="gpu0",
        engine="llamacpp",
        retry_after_ms=1200,
        policy_label="reject",
    )
    conv = make_panel(bridge).current()
    type_and_send(conv, "please", qloop)
    bar = conv.error_bar
    assert bar.sentence.text() == (
        "The queue of pool gpu0 is full. Wait about 1 s and send again, or raise the queue "
        "size in Settings."
    )
    assert bar.action_button.text() == "Open Settings"
    assert "HTTP" not in bar.sentence.text() and "429" not in bar.sentence.text()
    assert conv.prompt.toPlainText() == "please"
    assert conv.history == [] and conv.chat_id is None
    assert not conv.busy and conv.send_button.isEnabled()


def test_a_paused_pool_offers_resume(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    bridge.pool_list = [pool_view("demo", draining=True)]
    bridge.submit_error = OrchError(
        "POOL_UNAVAILABLE",
        "no pool: no pool is feasible; demo skipped: draining; check GET /v1/pools",
        status=503,
    )
    panel = make_panel(bridge)
    asked: list[str] = []
    panel.navigate.connect(asked.append)
    conv = panel.current()
    type_and_send(conv, "please", qloop)
    bar = conv.error_bar
    assert bar.sentence.text() == "Pool demo is paused. Resume it to get an answer."
    assert "GET /" not in bar.sentence.text()
    assert bar.action_button.text() == "Resume the pool"
    bar.action_button.click()
    assert ("resume", "demo") in bridge.commands
    assert bar.isHidden() and asked == []


def test_no_pool_for_the_model_opens_models(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    bridge.submit_error = OrchError("POOL_UNAVAILABLE", "no pool serves 'x'", status=503)
    panel = make_panel(bridge)
    asked: list[str] = []
    panel.navigate.connect(asked.append)
    type_and_send(panel.current(), "please", qloop)
    panel.current().error_bar.action_button.click()
    assert asked == ["open_models"]


# ---------------------------------------------------------------- cancel


def long_stream(bridge: FakeBridge) -> None:
    bridge.default_script = script(TOKENS)
    bridge.delay = 0.02


def test_cancel_button_sends_cancel(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    long_stream(bridge)
    conv = make_panel(bridge).current()
    assert not conv.cancel_button.isEnabled()
    type_and_send(conv, "go", qloop)
    task_id = str(bridge.submitted[0].task_id)
    assert conv.cancel_button.isEnabled()
    conv.cancel_button.click()
    assert ("cancel", task_id) in bridge.commands
    assert conv.status.text() == "Stopping…"


def test_escape_sends_cancel(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    long_stream(bridge)
    panel = make_panel(bridge)
    panel.show()
    panel.activateWindow()
    assert QTest.qWaitForWindowActive(panel, 2000)
    conv = panel.current()
    type_and_send(conv, "go", qloop)
    conv.prompt.setFocus()
    QTest.keyClick(conv.prompt, Qt.Key.Key_Escape)
    assert bridge.commands[-1] == ("cancel", str(bridge.submitted[0].task_id))


def test_a_canceled_end_keeps_the_partial_answer(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    events = script(["so", " far"])
    events[-1] = EndEvent(
        END, {"tokens_out": 2, "decode_time_ms": 10, "decode_ms": 10, "finish_reason": "canceled"}
    )
    bridge.default_script = events
    conv = make_panel(bridge).current()
    type_and_send(conv, "go", qloop)
    qloop.wait_until(lambda: not conv.busy)
    assert conv.status.text() == "Stopped."
    assert conv.history[-1].content == "so far"


# ---------------------------------------------------------------- tabs


def test_conversations_in_tabs_have_their_own_sessions(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    panel = make_panel(bridge)
    first = panel.current()
    second = panel.new_conversation()
    assert panel.tabs.count() == 2 and panel.current() is second
    assert panel.tabs.tabText(1) == "New chat"
    type_and_send(second, "Why is the sky blue?", qloop)
    assert panel.tabs.tabText(1) == "Why is the sky blue?"
    assert first.session_id != second.session_id
    uuid.UUID(second.session_id)
    panel.close_conversation(0)
    panel.close_conversation(0)
    assert panel.tabs.count() == 1  # always one open


def test_ctrl_t_opens_a_conversation(make_panel: Any, qloop: QtAsync) -> None:
    panel = make_panel(FakeBridge())
    panel.show()
    panel.activateWindow()
    assert QTest.qWaitForWindowActive(panel, 2000)
    panel.current().prompt.setFocus()
    QTest.keyClick(panel.current().prompt, Qt.Key.Key_T, Qt.KeyboardModifier.ControlModifier)
    assert panel.tabs.count() == 2


def test_closing_a_busy_tab_cancels_its_task(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    long_stream(bridge)
    panel = make_panel(bridge)
    type_and_send(panel.current(), "go", qloop)
    panel.close_conversation(0)
    assert ("cancel", str(bridge.submitted[0].task_id)) in bridge.commands
    qloop.sleep(0.05)
    assert bridge.background == set()


def test_new_pools_appear_in_the_pickers(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    panel = make_panel(bridge)
    conv = panel.current()
    conv.target.setCurrentIndex(conv.target.findData("pool:gpu0"))
    bridge.pool_list = two_pools()
    bridge.poolsChanged.emit((bridge.pool_list[1],))
    assert conv.target.findData("pool:gpu1") >= 0
    assert conv.target.findData("model:llama") >= 0
    assert conv.target.currentData() == "pool:gpu0"
    assert conv.pool_choice.count() == 2


def test_copy_regenerate_and_edit_the_last_message(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    bridge.default_script = script(["Paris"])
    conv = make_panel(bridge).current()
    assert not conv.regenerate_button.isEnabled() and not conv.edit_button.isEnabled()
    type_and_send(conv, "Capital of France?", qloop)
    qloop.wait_until(lambda: not conv.busy)
    conv.transcript.anchorClicked.emit(QUrl("copy:1"))
    assert QGuiApplication.clipboard().text() == "Paris"
    conv.regenerate_button.click()
    qloop.wait_until(lambda: not conv.busy)
    assert len(bridge.submitted) == 2
    assert [m.content for m in bridge.submitted[1].messages or []] == ["Capital of France?"]
    assert [m.content for m in conv.history] == ["Capital of France?", "Paris"]
    assert conv.transcript.toPlainText().count("Paris") == 1
    conv.edit_button.click()
    assert conv.prompt.toPlainText() == "Capital of France?" and conv.history == []
    conv.prompt.setPlainText("Capital of Italy?")
    conv.send_button.click()
    qloop.wait_until(lambda: not conv.busy)
    assert [m.content for m in bridge.submitted[2].messages or []] == ["Capital of Italy?"]
    assert "France" not in conv.transcript.toPlainText()


def test_markdown_answers_render_code_blocks(make_panel: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    bridge.default_script = script(["Use **this**:\n\n", "```python\n", "print('hi')\n", "```\n"])
    conv = make_panel(bridge).current()
    type_and_send(conv, "code please", qloop)
    qloop.wait_until(lambda: not conv.busy)
    text = conv.transcript.toPlainText()
    assert "Use this:" in text and "print('hi')" in text and "```" not in text
    doc = conv.transcript.document()
    block = doc.findBlock(text.index("print('hi')"))
    assert block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence)
    assert conv.transcript.renders == 1


class Counting(FakeBridge):
    """Counts the token events its streams have yielded."""

    yielded = 0

    async def stream(self, task_id: str) -> AsyncIterator[Sequence[TaskEvent]]:
        async for batch in super().stream(task_id):
            self.yielded += sum(1 for e in batch if e.kind == TOKEN)
            yield batch


def test_a_hidden_chat_is_not_rendered_while_it_streams_and_shows_all_once_shown(
    make_panel: Any, qloop: QtAsync
) -> None:
    bridge = Counting()
    bridge.default_script = script(TOKENS)
    bridge.delay = 0.004
    panel = make_panel(bridge)
    panel.show()
    first = panel.current()
    type_and_send(first, "go", qloop)
    qloop.wait_until(lambda: bridge.yielded > 10)
    panel.new_conversation()  # the first chat's tab is no longer the current one
    qloop.sleep(0.05)
    text, flushes = transcript(first), first.transcript.flushes
    seen = bridge.yielded
    qloop.wait_until(lambda: bridge.yielded > seen + 40)
    assert first.busy
    assert (transcript(first), first.transcript.flushes) == (text, flushes)
    assert not panel.tabs.tabIcon(0).isNull()  # the unread marker
    delivered = bridge.yielded
    panel.tabs.setCurrentWidget(first)
    assert "".join(TOKENS[:delivered]).strip() in transcript(first)
    assert first.transcript.flushes == flushes + 1  # everything at once
    assert panel.tabs.tabIcon(0).isNull()
    qloop.wait_until(lambda: not first.busy)
    assert "".join(TOKENS).strip() in transcript(first)
    assert first.transcript.renders == 1
