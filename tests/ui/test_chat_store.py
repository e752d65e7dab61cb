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

from app.ui.chat_panel import ChatPanel
from app.ui.chat_sidebar import ChatSidebar
from app.ui.chat_store import ChatStore, StoredMessage, default_path
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


WRITER = """
import sys, time
from app.ui.chat_store import ChatStore, StoredMessage
store = ChatStore(sys.argv[1])
chat = store.create("busy")
i = 0
while True:
    store.add_message(chat.chat_id, StoredMessage("user" if i % 2 else "assistant", "x" * 500))
    i += 1
    if i == 20:
        print("ready", flush=True)
"""


def test_kill_9_while_writing_leaves_a_readable_database(tmp_path: Path) -> None:
    path = tmp_path / "chats.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    store = ChatStore(path)
    [chat] = store.chats()
    messages = store.messages(chat.chat_id)
    assert len(messages) >= 20
    assert all(m.content == "x" * 500 for m in messages)
