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


LONG_PROMPT = "Turn this inventory of my home lab into a long, detailed guide:\n" + "".join(
    f"host-{i:02d} 10.0.{i}.{i * 7 % 255} gpu{i % 2} 24576MiB port {8080 + i}; " for i in range(48)
)
"""A prompt the core admits (by its estimate) that the demo model's tokenizer makes
larger, so its long answer runs into the context: a real cut on the real engine."""


async def _until(pred: Any, limit_s: float) -> bool:
    for _ in range(int(limit_s / 0.1)):
        if pred():
            return True
        await asyncio.sleep(0.1)
    return bool(pred())


async def context_cut_scenes(window: Any, out: Path) -> list[Path]:
    """Send a chat whose answer the demo pool's context cuts; grab it with its offer,
    continue in a new chat from a summary and grab that (Options open, showing the
    carried system prompt). Returns the written paths."""
    conv = pinned_chat(window, "demo", LONG_PROMPT, 2048 - 16 - len(LONG_PROMPT) // 4)
    await _until(lambda: not conv.busy, 120.0)
    written = [await grab_conversation(window, conv, out / "chat-context-cut.png")]
    if conv.error_bar.isHidden() or conv.error_bar.second_button.isHidden():
        return written  # not cut this time: no summary to show
    before = window.chat.tabs.count()
    conv.error_bar.second_button.click()
    await asyncio.sleep(0.05)
    written.append(await grab_conversation(window, conv, out / "chat-summarising.png"))
    if await _until(lambda: window.chat.tabs.count() > before, 120.0):
        new = window.chat.current()
        new.opts.toggle.setChecked(True)
        written.append(await grab_conversation(window, new, out / "chat-summary.png"))
    return written


async def chat_scenes(window: Any, live: Any, markdown_chat: str, out: Path) -> list[Path]:
    """Grab the queued, refused, live, context-cut and Markdown chats; return the paths."""
    written = await queued_and_refused(window, out)
    written.append(await grab_conversation(window, live, out / "chat-live.png"))
    written += await context_cut_scenes(window, out)
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
