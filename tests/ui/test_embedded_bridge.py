"""EmbeddedBridge over a real Orchestrator on its own thread: coalesced deliveries,
commands across the thread boundary, refusals as OrchError."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.engine_host.mock import MockSpec
from app.orchestrator.contracts import TaskRequest
from app.orchestrator.errors import OrchError
from app.orchestrator.service import Orchestrator
from app.ui.backend_thread import BackendThread
from app.ui.bridge import MAX_UPDATES_PER_S
from app.ui.chat_panel import ChatPanel
from app.ui.embedded_bridge import EmbeddedBridge
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeControls
from tests.ui.support import mock_core

TOKENS = 600  # at 3000 tokens/s: 0.2 s per stream


start_core = mock_core(MockSpec("m0", tokens_per_s=3000, slots=4))


@pytest.fixture
def bridge(qloop: QtAsync) -> Iterator[EmbeddedBridge]:
    thread: BackendThread[Orchestrator] = BackendThread(start_core)
    orch = thread.start(timeout=20)
    b = EmbeddedBridge(orch, FakeControls(), thread, sample_interval_s=0.05)
    qloop.wait_until(lambda: all(p.ready for p in b.pools()))
    yield b
    b.close()
    thread.stop(timeout=20)


def test_streams_arrive_in_batches_at_most_30_a_second(
    qloop: QtAsync, bridge: EmbeddedBridge
) -> None:
    emissions: list[float] = []
    bridge.tasksChanged.connect(lambda _views: emissions.append(time.monotonic()))

    async def one() -> tuple[list[int], int, float]:
        resp = await bridge.submit(TaskRequest(prompt="x", max_tokens=TOKENS))
        sizes: list[int] = []
        kinds: list[str] = []
        began = time.monotonic()
        async for batch in bridge.stream(str(resp.task_id)):
            sizes.append(len(batch))
            kinds += [e.kind for e in batch]
        assert kinds[0] == "started" and kinds[-1] == "end"
        return sizes, kinds.count("token"), time.monotonic() - began

    async def four() -> list[tuple[list[int], int, float]]:
        return await asyncio.gather(*(one() for _ in range(4)))

    began = time.monotonic()
    results = qloop.run(four(), timeout=30)
    elapsed = time.monotonic() - began
    for sizes, tokens, took in results:
        assert tokens == TOKENS
        assert len(sizes) <= took * MAX_UPDATES_PER_S + 3, (len(sizes), took)
        assert max(sizes) > 1  # tokens were batched, not delivered one by one
    assert len(emissions) <= elapsed * MAX_UPDATES_PER_S + 3
    assert sum(t.state == "done" for t in bridge.tasks()) >= 1


def test_refusals_cross_back_as_orch_errors(qloop: QtAsync, bridge: EmbeddedBridge) -> None:
    with pytest.raises(OrchError) as err:
        qloop.run(bridge.cancel("no-such-task"))
    assert err.value.code == "NOT_FOUND"
    assert qloop.run(bridge.session("no-such-session")) is None
    qloop.run(bridge.drain("m0"))
    qloop.wait_until(lambda: bridge.pools()[0].draining)
    qloop.run(bridge.resume("m0"))
    qloop.wait_until(lambda: not bridge.pools()[0].draining)


def test_samples_arrive_on_the_qt_thread(qloop: QtAsync, bridge: EmbeddedBridge) -> None:
    import threading

    threads: list[str] = []
    bridge.sampled.connect(lambda _s: threads.append(threading.current_thread().name))
    qloop.wait_until(lambda: len(threads) >= 2)
    assert set(threads) == {threading.main_thread().name}


def test_chats_follow_their_streams_without_an_asyncio_task_per_stream(
    qtbot: Any, qloop: QtAsync, bridge: EmbeddedBridge
) -> None:
    panel = ChatPanel(bridge)
    qtbot.addWidget(panel)
    convs = [panel.current()] + [panel.new_conversation() for _ in range(3)]
    for conv in convs:
        conv.prompt.setPlainText("go")
        conv.max_tokens.setValue(TOKENS)
        conv.send()
    qloop.wait_until(lambda: all(c.transcript.flushes > 1 for c in convs))  # tokens arrive
    streaming = [c for c in convs if c.busy]
    assert len(streaming) == 4
    tasks = [t for t in asyncio.all_tasks(qloop.loop) if not t.done()]
    assert len(tasks) <= 1, tasks  # only the test's own poll of wait_until
    qloop.wait_until(lambda: not any(c.busy for c in convs), timeout=20)
    for conv in convs:
        assert conv.messages[-1].role == "assistant"
        assert f"{TOKENS} tokens" in conv.messages[-1].stats
