"""Child process of the kill -9 test: the real chat panel on the real core (a mock
pool on the backend thread) chatting into a ChatStore file, turn after turn, until
it is killed. Prints "answered N" after each answer is saved, and "streaming N" once
the answer of turn N shows its first words. From turn ``LONG_FROM`` on (when asked
with a third argument "long") each answer is long, so it is still streaming when the
test kills the process.

Run as ``python -m tests.ui.chat_writer PATH [long]`` with QT_QPA_PLATFORM=offscreen.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import qasync
from PySide6.QtWidgets import QApplication

from app.engine_host.mock import MockSpec
from app.orchestrator.service import Orchestrator
from app.ui.backend_thread import BackendThread
from app.ui.chat_panel import ChatPanel, Conversation
from app.ui.chat_store import ChatStore
from app.ui.embedded_bridge import EmbeddedBridge
from tests.ui.fakes import FakeControls
from tests.ui.support import mock_core

ANSWER_TOKENS = 6
LONG_FROM = 21


start_core = mock_core(MockSpec("mock0", ctx=4096, tokens_per_s=600))


async def until(pred: Callable[[], object]) -> None:
    while not pred():  # noqa: ASYNC110 - polls widget state
        await asyncio.sleep(0.002)


async def chat(conv: Conversation, bridge: EmbeddedBridge, long: bool) -> None:
    await until(lambda: bridge.pools() and all(p.ready for p in bridge.pools()))
    turn = 0
    while True:
        turn += 1
        conv.max_tokens.setValue(3000 if long and turn >= LONG_FROM else ANSWER_TOKENS)
        conv.prompt.setPlainText(f"Question {turn}: what next?")
        conv.send_button.click()
        await until(lambda: conv.status.text().startswith("Answering") or not conv.busy)
        print(f"streaming {turn}", flush=True)
        await until(lambda: not conv.busy)
        print(f"answered {turn}", flush=True)


def main(path: str, long: bool) -> None:
    app = QApplication([])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    thread: BackendThread[Orchestrator] = BackendThread(start_core)
    bridge = EmbeddedBridge(thread.start(timeout=20), FakeControls(), thread)
    panel = ChatPanel(bridge, store=ChatStore(path))
    loop.run_until_complete(chat(panel.current(), bridge, long))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] == ["long"])
