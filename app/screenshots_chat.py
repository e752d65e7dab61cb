"""The chat scenes of ``app.screenshots``: saved chats in the sidebar, a Markdown
conversation, a chat waiting in a queue, and a refused chat with its action button.

The demo model writes nonsense, so the Markdown conversation is a saved chat written
here (the renderer is the real one); the queued and refused chats are real turns on
the running stack.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from app.ui.chat_store import ChatStore, StoredMessage

CHAT_TAB = 1
MARKDOWN_ANSWER = """For a 7B model in 4-bit (about **4.5 GB** of weights) either card works; pick \
the one with the most *free* memory so the KV cache fits:

| GPU | VRAM | Fits 7B Q4 with 8k context |
|-----|------|----------------------------|
| RTX 3090 | 24 GB | yes, with room to spare |
| RTX 3060 | 12 GB | yes |

Pin the chat to that pool, or start the server with:

```bash
llama-orch serve --bind 127.0.0.1:8080
```

Then check the placement in **Decisions**."""

SEEDED = (
    ("Which GPU should run a 7B model?", "Answer briefly.", MARKDOWN_ANSWER),
    ("Summarise the engine log", "", "The engine started in *1.2 s* and served 14 tasks."),
    ("Explain drain vs. pause", "", "**Drain** finishes running tasks; nothing new starts."),
)


def seed_chats(store: ChatStore) -> str:
    """Write the saved chats the sidebar shows; return the Markdown chat's id. Blocks briefly."""
    first = ""
    for title, system, answer in reversed(SEEDED):
        chat = store.create(title, system)
        store.add_message(chat.chat_id, StoredMessage("user", title), pool="gpu0")
        stats = "TTFT 41 ms · 96.3 tokens/s · 118 tokens · stop"
        store.add_message(chat.chat_id, StoredMessage("assistant", answer, stats), model="qwen-7b")
        first = chat.chat_id
    return first


def seeded_store(folder: Path) -> tuple[ChatStore, str]:
    """Open ``folder``/chats.sqlite3 with the saved chats written; return it and the
    Markdown chat's id. Blocks briefly."""
    store = ChatStore(folder / "chats.sqlite3")
    return store, seed_chats(store)


async def chat_scenes(window: Any, live: Any, markdown_chat: str, out: Path) -> list[Path]:
    """Grab the queued, refused, live and Markdown chats; return the written paths."""
    written = await queued_and_refused(window, out)
    written.append(await grab_conversation(window, live, out / "chat-live.png"))
    markdown = window.chat.open_chat(markdown_chat)
    written.append(await grab_conversation(window, markdown, out / "chat.png"))
    return written


async def grab_conversation(window: Any, conv: Any, path: Path) -> Path:
    """Show ``conv`` in the Chat tab, let it repaint, and save the window to ``path``."""
    window.tabs.setCurrentIndex(CHAT_TAB)
    window.chat.tabs.setCurrentWidget(conv)
    await asyncio.sleep(0.4)
    window.grab().save(str(path))
    return path


def pinned_chat(window: Any, pool_id: str, text: str, max_tokens: int) -> Any:
    """Open a new chat pinned to ``pool_id`` and send ``text``; return the conversation."""
    conv = window.chat.new_conversation()
    conv.mode.setCurrentIndex(conv.mode.findData("pin"))
    conv.pin_pool.setCurrentIndex(conv.pin_pool.findData(pool_id))
    conv.max_tokens.setValue(max_tokens)
    conv.prompt.setPlainText(text)
    conv.send()
    return conv


async def queued_and_refused(window: Any, out: Path) -> list[Path]:
    """Fill mock0's two slots and queue two more chats behind them; send one chat to the
    paused mock1. Grab the last queued chat and the refused one, then close them."""
    busy = [pinned_chat(window, "mock0", f"Long answer {i}", 400) for i in range(3)]
    await asyncio.sleep(0.3)  # admitted on the backend thread
    waiting = pinned_chat(window, "mock0", "Is my chat queued?", 40)
    written = [await grab_conversation(window, waiting, out / "chat-queued.png")]
    refused = pinned_chat(window, "mock1", "Use the paused pool, please", 40)
    await asyncio.sleep(0.3)
    written.append(await grab_conversation(window, refused, out / "chat-error.png"))
    for conv in [*busy, waiting, refused]:
        window.chat.close_conversation(window.chat.tabs.indexOf(conv))
        if conv.chat_id:
            window.chat.store.delete(conv.chat_id)
    window.chat.sidebar.refresh()
    return written
