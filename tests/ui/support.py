"""Helpers shared by the chat tests: scripted task events, sending a prompt, and a real
core over mock pools for the backend thread."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.engine_host.mock import MockEngine, MockSpec
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
from app.orchestrator.service import Orchestrator
from app.orchestrator.state import OrchestratorConfig
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


StopCore = Callable[[], Awaitable[None]]


def mock_core(
    *specs: MockSpec, config: OrchestratorConfig | None = None
) -> Callable[[], Awaitable[tuple[Orchestrator, StopCore]]]:
    """Return the start function of a ``BackendThread``: a started core over mock pools
    of ``specs`` and the coroutine function that shuts it down."""

    async def start() -> tuple[Orchestrator, StopCore]:
        orch = Orchestrator([MockEngine(spec) for spec in specs], config)
        await orch.start()

        async def stop() -> None:
            await orch.shutdown(deadline_s=1.0)

        return orch, stop

    return start
