"""Helpers shared by the chat tests: scripted task events and sending a prompt."""

from __future__ import annotations

from app.orchestrator.events import (
    END,
    STARTED,
    TOKEN,
    EndData,
    EndEvent,
    StartedData,
    StartedEvent,
    TaskEvent,
    TokenEvent,
)
from app.ui.chat_panel import Conversation
from tests.ui.conftest import QtAsync


def script(tokens: list[str], pool_id: str = "gpu0") -> list[TaskEvent]:
    started: StartedData = {
        "queue_position": 0,
        "predicted_start_ms": 0,
        "pool_id": pool_id,
        "correlation_id": "c-1",
    }
    end: EndData = {
        "tokens_out": len(tokens),
        "decode_time_ms": 500,
        "decode_ms": 500,
        "finish_reason": "stop",
    }
    return [
        StartedEvent(STARTED, started),
        *(TokenEvent(TOKEN, {"t": t, "i": i}) for i, t in enumerate(tokens)),
        EndEvent(END, end),
    ]


def type_and_send(conv: Conversation, text: str, qloop: QtAsync) -> None:
    """Send ``text`` and let the loop start the stream task (Qt events processed later
    outside the loop must not be the first to step it)."""
    conv.prompt.setPlainText(text)
    conv.send_button.click()
    qloop.sleep(0.01)
