"""Chats on the real core with mock pools: trimming to the context, no turn limit,
queued status, and an answer cut by the context."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from app.engine_host.mock import MockSpec
from app.orchestrator.contracts import ChatMessage
from app.orchestrator.events import END, ERROR, EndEvent, ErrorData, ErrorEvent
from app.orchestrator.service import Orchestrator
from app.ui.backend_thread import BackendThread
from app.ui.chat_logic import CONTEXT_CUT, paired, trim_to_context
from app.ui.chat_panel import CARRIED, SUMMARISING, SUMMARY_FAILED, ChatPanel
from app.ui.chat_summary import SHARES, SUMMARY_HEADING, SUMMARY_TOKENS, summarise_history
from app.ui.conversation import TRIM_MARKER
from app.ui.embedded_bridge import EmbeddedBridge
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge, FakeControls
from tests.ui.support import mock_core, script, type_and_send


def test_trimming_keeps_the_system_prompt_and_drops_the_oldest_turns() -> None:
    history = []
    for i in range(10):
        history += [
            ChatMessage(role="user", content=f"question {i} " + "q" * 200),
            ChatMessage(role="assistant", content=f"answer {i} " + "a" * 200),
        ]
    trimmed = trim_to_context("Be brief.", history, "last one", ctx=512, max_tokens=64)
    roles = [m.role for m in trimmed.messages]
    assert roles[0] == "system" and roles[1] == "user" and roles[-1] == "user"
    assert trimmed.messages[-2].content.startswith("answer 9")
    assert trimmed.dropped > 0 and len(trimmed.messages) == 2 + 20 - trimmed.dropped
    chars = sum(len(m.content) + 8 for m in trimmed.messages)
    assert -(-chars // 4) + 64 <= 512  # what the core's context check computes
    untouched = trim_to_context("", history, "x", ctx=0, max_tokens=64)
    assert untouched.dropped == 0 and len(untouched.messages) == 21


def test_unanswered_user_turns_are_not_sent_again() -> None:
    u, a = ChatMessage(role="user", content="u"), ChatMessage(role="assistant", content="a")
    lost = ChatMessage(role="user", content="lost")
    assert paired([u, a, lost]) == [u, a]
    assert paired([lost, u, a]) == [u, a]


Core = tuple[Orchestrator, BackendThread[Orchestrator]]


# sessions keep their default limit of 8 turns
start_core = mock_core(MockSpec("mock0", ctx=512, slots=1, tokens_per_s=400))


@pytest.fixture
def core(qloop: QtAsync) -> Iterator[Core]:
    """The core on its own thread, as in the app."""
    thread: BackendThread[Orchestrator] = BackendThread(start_core)
    orch = thread.start(timeout=20)
    yield orch, thread
    thread.stop(timeout=20)


def send_on_loop(conv: Any, text: str, qloop: QtAsync) -> None:
    """Send as a click does in the app: with the qasync loop running (the core's submit
    arms timers on the running loop)."""

    async def click() -> None:
        conv.prompt.setPlainText(text)
        conv.send_button.click()

    qloop.run(click())
    qloop.sleep(0.01)


def real_panel(qtbot: Any, qloop: QtAsync, core: Core) -> tuple[ChatPanel, EmbeddedBridge]:
    bridge = EmbeddedBridge(core[0], FakeControls(), core[1])
    qloop.wait_until(lambda: all(p.ready for p in bridge.pools()))
    panel = ChatPanel(bridge)
    qtbot.addWidget(panel)
    return panel, bridge


def test_the_20th_turn_is_sent_trimmed_with_the_marker(
    qtbot: Any, qloop: QtAsync, core: Core
) -> None:
    panel, bridge = real_panel(qtbot, qloop, core)
    conv = panel.current()
    conv.max_tokens.setValue(24)
    conv.system_prompt.setPlainText("You are terse.")
    for turn in range(1, 21):
        send_on_loop(conv, f"Turn {turn}: " + "tell me more " * 25, qloop)
        qloop.wait_until(lambda: not conv.busy, 10)
        assert conv.error_bar.isHidden(), conv.error_bar.sentence.text()
    assert len(conv.messages) == 40
    assert [m.role for m in conv.history].count("assistant") == 20
    last = bridge.tasks(1)[0]
    assert last.state == "done" and last.tokens_out == 24
    assert conv.dropped > 0 and not conv.trim_label.isHidden()
    assert TRIM_MARKER in conv.trim_label.text()
    assert TRIM_MARKER in conv.transcript.toPlainText()
    bridge.close()


def test_queued_status_shows_the_position_then_started(
    qtbot: Any, qloop: QtAsync, core: Core
) -> None:
    panel, bridge = real_panel(qtbot, qloop, core)
    convs = [panel.current(), panel.new_conversation(), panel.new_conversation()]
    for conv, tokens in zip(convs, (450, 200, 200), strict=True):
        conv.max_tokens.setValue(tokens)  # ~1.1 s, then ~0.5 s each on the single slot (ctx 512)
        conv.prompt.setPlainText("hello")

    async def click_all() -> None:
        for conv in convs:
            conv.send_button.click()

    qloop.run(click_all())
    qloop.wait_until(lambda: all(c.task_id for c in convs))  # admitted on the backend
    waiting = convs[2]
    assert waiting.status.text().startswith("2nd in line on mock0, about ")
    assert "Starting" not in waiting.status.text()
    qloop.wait_until(lambda: waiting.status.text().startswith("Next in line on mock0"), 10)
    qloop.wait_until(lambda: waiting.status.text().startswith(("Starting", "Answering")), 5)
    qloop.wait_until(lambda: not waiting.busy, 5)
    bridge.close()


# a pool that tokenizes text twice as densely as the core estimates (as code or other
# scripts do), so an admitted answer can fill the context
start_dense_core = mock_core(
    MockSpec("mock0", ctx=1024, slots=1, tokens_per_s=5000, chars_per_token=2.0)
)


@pytest.fixture
def dense_core(qloop: QtAsync) -> Iterator[Core]:
    thread: BackendThread[Orchestrator] = BackendThread(start_dense_core)
    orch = thread.start(timeout=20)
    yield orch, thread
    thread.stop(timeout=20)


def click_on_loop(button: Any, qloop: QtAsync) -> None:
    async def click() -> None:
        button.click()

    qloop.run(click())


def test_a_long_chat_is_cut_by_the_context_and_continues_from_a_summary(
    qtbot: Any, qloop: QtAsync, dense_core: Core
) -> None:
    panel, bridge = real_panel(qtbot, qloop, dense_core)
    conv = panel.current()
    conv.system_prompt.setPlainText("Be kind.")
    conv.max_tokens.setValue(8)
    for turn in range(1, 20):
        send_on_loop(conv, f"Turn {turn}: tell me more", qloop)
        qloop.wait_until(lambda: not conv.busy, 10)
        assert conv.error_bar.isHidden(), conv.error_bar.sentence.text()
    assert conv.dropped == 0 and bridge.tasks(1)[0].tokens_out == 8
    conv.max_tokens.setValue(900)  # the 20th turn asks for a long answer
    send_on_loop(conv, "Turn 20: now write the whole saga", qloop)
    qloop.wait_until(lambda: not conv.busy, 20)
    cut = bridge.tasks(1)[0]
    assert cut.tokens_in <= 1024 - 900  # sent trimmed, so the core admitted it
    assert cut.state == "done" and cut.finish_reason == "length"
    assert 0 < cut.tokens_out < 900  # stopped by the context, not by max tokens
    assert conv.dropped > 0 and not conv.trim_label.isHidden()
    assert TRIM_MARKER in conv.transcript.toPlainText()
    assert CONTEXT_CUT in conv.transcript.toPlainText()
    assert conv.status.text() == "Cut off: the model's context is full."
    assert len(conv.messages) == 40  # the cut answer is kept
    bar = conv.error_bar
    assert not bar.isHidden() and bar.sentence.text() == "This conversation is full."
    assert (bar.action_button.text(), bar.second_button.text()) == (
        "Start a new chat",
        "Continue in a new chat",
    )

    click_on_loop(bar.second_button, qloop)
    assert conv.status.text() == SUMMARISING
    qloop.wait_until(lambda: panel.tabs.count() == 2, 10)
    summary_task = bridge.tasks(1)[0]
    assert summary_task.task_id != cut.task_id and summary_task.pool_id == "mock0"
    assert summary_task.prompt_start.startswith("Summarise the conversation")
    assert summary_task.state == "done" and summary_task.tokens_out == SUMMARY_TOKENS
    new = panel.current()
    assert new is not conv and not new.messages
    system = new.system_prompt.toPlainText()
    assert system.startswith("Be kind.\n\n" + SUMMARY_HEADING)
    summary = system.split(SUMMARY_HEADING, 1)[1]
    assert len(summary.split()) == SUMMARY_TOKENS  # the pool's words, one per token
    assert new.prompt.toPlainText() == "Please continue."
    assert CARRIED in new.transcript.toPlainText()
    bridge.close()


def test_a_failed_summary_says_why_and_offers_a_new_chat(
    qtbot: Any, qloop: QtAsync, core: Core
) -> None:
    panel, bridge = real_panel(qtbot, qloop, core)
    conv = panel.current()
    conv.max_tokens.setValue(8)
    send_on_loop(conv, "hello", qloop)
    qloop.wait_until(lambda: not conv.busy, 10)
    qloop.run(bridge.drain("mock0"))
    qloop.wait_until(lambda: any(p.draining for p in bridge.pools()))
    qloop.run(asyncio.sleep(0))
    panel.continue_in_new_chat(conv)
    assert conv.status.text() == SUMMARISING
    bar = conv.error_bar
    qloop.wait_until(lambda: not bar.isHidden(), 10)
    assert bar.sentence.text().startswith(SUMMARY_FAILED + " pool mock0 is paused")
    assert bar.action_button.text() == "Start a new chat" and bar.second_button.isHidden()
    assert panel.tabs.count() == 1
    bar.details_button.click()
    assert "POOL_UNAVAILABLE" in bar.details.text()
    click_on_loop(bar.action_button, qloop)
    assert panel.tabs.count() == 2 and panel.current().system_prompt.toPlainText() == ""
    bridge.close()


def test_an_answer_at_max_tokens_is_not_called_cut(qtbot: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    events = script(["a", " b"])
    events[-1] = EndEvent(
        END, {"tokens_out": 2, "decode_time_ms": 10, "decode_ms": 10, "finish_reason": "length"}
    )
    bridge.default_script = events
    panel = ChatPanel(bridge)
    qtbot.addWidget(panel)
    conv = panel.current()
    conv.max_tokens.setValue(2)
    type_and_send(conv, "short", qloop)
    qloop.wait_until(lambda: not conv.busy)
    assert CONTEXT_CUT not in conv.transcript.toPlainText() and conv.error_bar.isHidden()


def test_closing_a_chat_while_it_is_summarised_still_opens_the_new_chat(
    qtbot: Any, qloop: QtAsync, core: Core
) -> None:
    panel, bridge = real_panel(qtbot, qloop, core)
    conv = panel.current()
    conv.system_prompt.setPlainText("Be brief.")
    conv.max_tokens.setValue(8)
    send_on_loop(conv, "hello", qloop)
    qloop.wait_until(lambda: not conv.busy, 10)
    other = panel.new_conversation()
    panel.continue_in_new_chat(conv)
    panel.close_conversation(panel.tabs.indexOf(conv))
    qloop.wait_until(lambda: panel.current() is not other, 10)
    new = panel.current()
    assert panel.conversations == [other, new]
    assert new.system_prompt.toPlainText().startswith("Be brief.\n\n" + SUMMARY_HEADING)
    bridge.close()


# a pool whose tokenizer counts a token per character (four times the estimate)
start_very_dense_core = mock_core(
    MockSpec("mock0", ctx=1024, slots=1, tokens_per_s=5000, chars_per_token=1.0)
)


def test_a_summary_sends_less_of_the_chat_until_the_engine_can_answer(
    qtbot: Any, qloop: QtAsync
) -> None:
    thread: BackendThread[Orchestrator] = BackendThread(start_very_dense_core)
    orch = thread.start(timeout=20)
    bridge = EmbeddedBridge(orch, FakeControls(), thread)
    try:
        qloop.wait_until(lambda: all(p.ready for p in bridge.pools()))
        history = [
            ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"part {i} " * 40)
            for i in range(10)
        ]
        summary = qloop.run(summarise_history(bridge, history, "mock0", 1024), 20)
        qloop.wait_until(lambda: len(bridge.tasks(10)) == 3)
        tries = list(reversed(bridge.tasks(10)))
        # 1/2 and 1/4 of the context by the estimate fill this context before a word
        assert [t.tokens_out for t in tries] == [0, 0, SUMMARY_TOKENS]
        assert tries[0].tokens_in > tries[1].tokens_in > tries[2].tokens_in
        assert len(summary.split()) == SUMMARY_TOKENS
    finally:
        bridge.close()
        thread.stop(timeout=20)


def test_a_chat_too_long_even_in_part_says_so(qtbot: Any, qloop: QtAsync) -> None:
    bridge = FakeBridge()
    bridge.default_script = script(["fine"])
    panel = ChatPanel(bridge)
    qtbot.addWidget(panel)
    conv = panel.current()
    type_and_send(conv, "hello", qloop)
    qloop.wait_until(lambda: not conv.busy)
    refused: ErrorData = {
        "code": "INVALID_PARAMS", "message": "the request exceeds the available context size",
        "engine": "llamacpp", "pool_id": "gpu0", "retriable": False, "retry_after_ms": None,
    }  # fmt: skip
    bridge.default_script = [ErrorEvent(ERROR, refused)]  # what llama-server answers
    panel.continue_in_new_chat(conv)
    qloop.wait_until(lambda: not conv.error_bar.isHidden())
    assert len(bridge.submitted) == 1 + len(SHARES)  # every smaller part was tried
    assert conv.error_bar.sentence.text() == (
        f"{SUMMARY_FAILED} even the end of this conversation is too long for the model's context."
    )
    assert "exceeds the available context size" in conv.error_bar.details.text()
    assert conv.error_bar.action_button.text() == "Start a new chat"
