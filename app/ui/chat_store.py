"""Saved chats: one SQLite file in the XDG data dir (stdlib ``sqlite3``, no Qt).

The database runs in WAL mode and every change is one transaction, so a kill -9
in the middle of an answer loses at most that answer (it is written when it
ends), never the file or an earlier message. Calls block for the few
milliseconds a small local transaction takes; the window calls them from the Qt
thread (one connection, one owner).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS chats (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    pool TEXT NOT NULL DEFAULT '',
    system_prompt TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id TEXT NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    stats TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_chat ON messages(chat_id, id);
"""


def default_path() -> Path:
    """Return ``$XDG_DATA_HOME/llama-orch/chats.sqlite3`` (~/.local/share by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "llama-orch" / "chats.sqlite3"


@dataclass(frozen=True, slots=True)
class ChatSummary:
    """One row of the sidebar."""

    chat_id: str
    title: str
    created: float
    updated: float
    model: str
    pool: str
    system_prompt: str


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One saved message; ``stats`` is the grey line under an answer."""

    role: str
    content: str
    stats: str = ""


class ChatStore:
    """Chats and their messages in one SQLite database (``":memory:"`` for none on disk).

    Raises ``sqlite3.Error`` (or ``OSError`` creating the folder) when the file
    cannot be opened; each method blocks for one small transaction.
    """

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the connection (later calls raise sqlite3.ProgrammingError)."""
        self._db.close()

    def _tx(self, statements: Sequence[tuple[str, tuple[object, ...]]]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                db.execute(sql, args)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ---- chats -------------------------------------------------------------------

    def create(self, title: str, system_prompt: str = "") -> ChatSummary:
        """Create an empty chat and return it."""
        now = self._clock()
        chat = ChatSummary(str(uuid.uuid4()), title, now, now, "", "", system_prompt)
        self._tx(
            [
                (
                    "INSERT INTO chats (id, title, created, updated, system_prompt) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (chat.chat_id, title, now, now, system_prompt),
                )
            ]
        )
        return chat

    def get(self, chat_id: str) -> ChatSummary | None:
        """Return the chat, or None when it does not exist."""
        row = self._db.execute(f"SELECT {_COLS} FROM chats WHERE id = ?", (chat_id,)).fetchone()
        return ChatSummary(*row) if row else None

    def chats(self, query: str = "") -> list[ChatSummary]:
        """Return the chats, newest first; with ``query``, only those whose title or a
        message contains it (case-insensitive)."""
        if not query.strip():
            rows = self._db.execute(f"SELECT {_COLS} FROM chats ORDER BY updated DESC")
            return [ChatSummary(*r) for r in rows]
        like = "%" + query.strip().replace("\\", "\\\\").replace("%", "\\%") + "%"
        rows = self._db.execute(
            f"SELECT {_COLS} FROM chats WHERE title LIKE ?1 ESCAPE '\\' OR id IN "
            "(SELECT chat_id FROM messages WHERE content LIKE ?1 ESCAPE '\\') "
            "ORDER BY updated DESC",
            (like,),
        )
        return [ChatSummary(*r) for r in rows]

    def rename(self, chat_id: str, title: str) -> None:
        """Give the chat a new title."""
        self._tx([("UPDATE chats SET title = ? WHERE id = ?", (title, chat_id))])

    def set_system_prompt(self, chat_id: str, system_prompt: str) -> None:
        """Save the chat's system prompt."""
        sql = "UPDATE chats SET system_prompt = ? WHERE id = ?"
        self._tx([(sql, (system_prompt, chat_id))])

    def delete(self, chat_id: str) -> None:
        """Delete the chat and its messages (no-op when absent)."""
        self._tx([("DELETE FROM chats WHERE id = ?", (chat_id,))])

    # ---- messages ------------------------------------------------------------------

    def add_message(
        self, chat_id: str, message: StoredMessage, *, model: str = "", pool: str = ""
    ) -> None:
        """Append ``message`` and touch the chat (its model and pool when given), atomically."""
        now = self._clock()
        self._tx(
            [
                (
                    "INSERT INTO messages (chat_id, role, content, stats, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (chat_id, message.role, message.content, message.stats, now),
                ),
                (
                    "UPDATE chats SET updated = ?, model = COALESCE(NULLIF(?, ''), model), "
                    "pool = COALESCE(NULLIF(?, ''), pool) WHERE id = ?",
                    (now, model, pool, chat_id),
                ),
            ]
        )

    def messages(self, chat_id: str) -> list[StoredMessage]:
        """Return the chat's messages in order."""
        rows = self._db.execute(
            "SELECT role, content, stats FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,)
        )
        return [StoredMessage(*r) for r in rows]

    def truncate(self, chat_id: str, keep: int) -> None:
        """Delete every message after the first ``keep`` (regenerate, edit and resend)."""
        self._tx(
            [
                (
                    "DELETE FROM messages WHERE chat_id = ?1 AND id NOT IN (SELECT id FROM "
                    "messages WHERE chat_id = ?1 ORDER BY id LIMIT ?2)",
                    (chat_id, max(0, keep)),
                )
            ]
        )

    # ---- export ----------------------------------------------------------------------

    def export_markdown(self, chat_id: str, path: Path | str) -> None:
        """Write the chat as Markdown to ``path`` atomically (temp file, fsync, rename).

        Raises KeyError for an unknown chat and OSError when the file cannot be written.
        """
        chat = self.get(chat_id)
        if chat is None:
            raise KeyError(chat_id)
        write_atomically(Path(path), to_markdown(chat, self.messages(chat_id)))


_COLS = "id, title, created, updated, model, pool, system_prompt"
_ROLE_TITLES = {"user": "You", "assistant": "Assistant", "system": "System prompt"}


def to_markdown(chat: ChatSummary, messages: Sequence[StoredMessage]) -> str:
    """Return the chat as a Markdown document (title, model line, one section per message)."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat.created))
    where = " · ".join(x for x in (chat.model, chat.pool) if x)
    lines = [f"# {chat.title}", "", f"_{when}{' · ' + where if where else ''}_", ""]
    if chat.system_prompt:
        lines += ["## System prompt", "", chat.system_prompt, ""]
    for msg in messages:
        lines += [f"## {_ROLE_TITLES.get(msg.role, msg.role)}", "", msg.content, ""]
    return "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder, fsync and rename.

    Raises OSError; a failure leaves any earlier file untouched.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
