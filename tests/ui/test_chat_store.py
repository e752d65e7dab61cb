"""Saved chats: the SQLite store, a restart over the same data dir, kill -9 safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from app.ui.chat_panel import ChatPanel
from app.ui.chat_sidebar import ChatSidebar
from app.ui.chat_store import ChatStore, StoredMessage, default_path
from tests.ui.chat_writer import ANSWER_TOKENS, LONG_FROM
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge
from tests.ui.support import script, type_and_send


def test_store_roundtrip_search_rename_truncate_delete(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chats.sqlite3")
    a = store.create("Cooking", "Be brief.")
    b = store.create("GPUs")
    store.add_message(a.chat_id, StoredMessage("user", "How long to boil an egg?"))
    store.add_message(b.chat_id, StoredMessage("user", "Which card for a 7B model?"), pool="gpu0")
    store.add_message(b.chat_id, StoredMessage("assistant", "A 3090.", "12 tokens"), model="qwen")
    assert [c.title for c in store.chats()] == ["GPUs", "Cooking"]
    assert [c.title for c in store.chats("EGG")] == ["Cooking"]
    assert [c.title for c in store.chats("50%")] == []
    got = store.get(b.chat_id)
    assert got is not None and (got.model, got.pool) == ("qwen", "gpu0")
    assert store.messages(b.chat_id)[1] == StoredMessage("assistant", "A 3090.", "12 tokens")
    store.rename(a.chat_id, "Eggs")
    store.truncate(b.chat_id, 1)
    assert [m.role for m in store.messages(b.chat_id)] == ["user"]
    store.delete(a.chat_id)
    assert [c.title for c in store.chats()] == ["GPUs"]
    assert store.messages(a.chat_id) == []


def test_export_markdown_is_written_whole(tmp_path: Path) -> None:
    store = ChatStore(":memory:")
    chat = store.create("Code", "Answer in Python.")
    store.add_message(chat.chat_id, StoredMessage("user", "Print hi"))
    store.add_message(chat.chat_id, StoredMessage("assistant", "```python\nprint('hi')\n```"))
    out = tmp_path / "code.md"
    store.export_markdown(chat.chat_id, out)
    text = out.read_text()
    assert text.startswith("# Code\n")
    assert "## System prompt\n\nAnswer in Python." in text
    assert "## You\n\nPrint hi" in text and "## Assistant\n\n```python\nprint('hi')\n```" in text
    assert [p.name for p in tmp_path.iterdir()] == ["code.md"]  # no temp file left


def test_default_path_is_in_the_xdg_data_dir(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_path() == tmp_path / "llama-orch" / "chats.sqlite3"


def test_chats_survive_a_restart(tmp_path: Path, qtbot: Any, qloop: QtAsync) -> None:
    path = tmp_path / "chats.sqlite3"
    bridge = FakeBridge()
    bridge.default_script = script(["**Use", " a 3090**"])
    first = ChatPanel(bridge, store=ChatStore(path))
    qtbot.addWidget(first)
    conv = first.current()
    conv.system_prompt.setPlainText("Be brief.")
    type_and_send(conv, "Which GPU for a 7B model?", qloop)
    qloop.wait_until(lambda: not conv.busy)
    assert first.sidebar.list.count() == 1

    # the app started again
    second = ChatPanel(FakeBridge(), store=ChatStore(path))
    qtbot.addWidget(second)
    row = second.sidebar.list.item(0).text()
    assert row.startswith("Which GPU for a 7B model?\n") and "gpu0" in row
    restored = second.current()
    assert restored.chat_id == conv.chat_id
    assert [m.content for m in restored.history] == ["Which GPU for a 7B model?", "**Use a 3090**"]
    assert restored.system_prompt.toPlainText() == "Be brief."
    assert "Use a 3090" in restored.transcript.toPlainText()
    assert "**" not in restored.transcript.toPlainText()  # rendered as Markdown
    type_and_send(restored, "And for 13B?", qloop)
    qloop.wait_until(lambda: not restored.busy)
    req = second._bridge.submitted[0]  # type: ignore[attr-defined]
    assert [m.role for m in req.messages or []] == ["system", "user", "assistant", "user"]


def test_a_new_chat_leaves_no_saved_chat_highlighted(tmp_path: Path, qtbot: Any) -> None:
    store = ChatStore(tmp_path / "c.sqlite3")
    store.add_message(store.create("Alpha").chat_id, StoredMessage("user", "about Alpha"))
    panel = ChatPanel(FakeBridge(), store=store)
    qtbot.addWidget(panel)
    assert panel.sidebar.selected_id() == panel.current().chat_id
    panel.new_conversation()
    assert panel.sidebar.selected_id() is None  # Rename and Delete must not hit Alpha
    panel.tabs.setCurrentIndex(0)
    assert panel.sidebar.selected_id() == store.chats()[0].chat_id


def test_sidebar_rename_delete_and_search(tmp_path: Path, qtbot: Any) -> None:
    store = ChatStore(tmp_path / "c.sqlite3")
    for title in ("Alpha", "Beta"):
        store.add_message(store.create(title).chat_id, StoredMessage("user", f"about {title}"))
    sidebar = ChatSidebar(store, text=lambda *_: "Gamma", yes=lambda *_: True)
    qtbot.addWidget(sidebar)
    sidebar.list.setCurrentRow(0)
    sidebar.rename_selected()
    assert [c.title for c in store.chats()] == ["Gamma", "Alpha"]
    sidebar.search.setText("alpha")
    assert sidebar.list.count() == 1
    sidebar.list.setCurrentRow(0)
    sidebar.delete_selected()
    assert [c.title for c in store.chats()] == ["Gamma"]
    assert sidebar.list.isHidden() and sidebar.empty.text() == "No chat matches."


def run_writer(path: Path, long: bool, kill_after: bytes, delay_s: float) -> None:
    """Start the chat writer (the real panel and core), kill -9 it ``delay_s`` after it
    printed ``kill_after``."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "QT_QPA_PLATFORM": "offscreen"}
    args = [sys.executable, "-m", "tests.ui.chat_writer", str(path), *(["long"] if long else [])]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env, cwd=root)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == kill_after:
                break
        else:
            raise AssertionError(f"the writer ended before {kill_after!r}")
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def saved_turns(path: Path) -> list[StoredMessage]:
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    store = ChatStore(path)
    [chat] = store.chats()
    return store.messages(chat.chat_id)


def assert_complete_pairs(messages: list[StoredMessage], pairs: int) -> None:
    for n in range(pairs):
        question, answer = messages[2 * n], messages[2 * n + 1]
        assert (question.role, question.content) == ("user", f"Question {n + 1}: what next?")
        assert answer.role == "assistant" and len(answer.content.split()) == ANSWER_TOKENS
        assert f"{ANSWER_TOKENS} tokens" in answer.stats


def test_kill_9_mid_answer_loses_only_the_answer_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "chats.sqlite3"
    run_writer(path, long=True, kill_after=f"streaming {LONG_FROM}".encode(), delay_s=0.3)
    messages = saved_turns(path)
    earlier = LONG_FROM - 1
    assert len(messages) == 2 * earlier + 1  # every earlier turn, and the question in flight
    assert_complete_pairs(messages, earlier)
    assert messages[-1] == StoredMessage("user", f"Question {LONG_FROM}: what next?")


@pytest.mark.parametrize("delay_s", [0.0, 0.013, 0.029])
def test_kill_9_among_quick_turns_leaves_a_readable_database(
    tmp_path: Path, delay_s: float
) -> None:
    path = tmp_path / "chats.sqlite3"
    run_writer(path, long=False, kill_after=b"answered 10", delay_s=delay_s)
    messages = saved_turns(path)
    pairs = len(messages) // 2
    assert pairs >= 10
    assert_complete_pairs(messages, pairs)
    if len(messages) % 2:  # killed while that answer streamed: only its question is kept
        assert messages[-1] == StoredMessage("user", f"Question {pairs + 1}: what next?")
