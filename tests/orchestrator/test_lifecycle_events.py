"""The per-task channel: cancel races and terminal events."""

from __future__ import annotations

import asyncio
import random

import pytest
from pydantic import BaseModel

from app.orchestrator.contracts import (
    EndPayload,
    ErrorPayload,
    MetricsPayload,
    StartedPayload,
    TokenPayload,
)
from app.orchestrator.events import (
    END,
    METRICS,
    STARTED,
    TOKEN,
    EndData,
    EndEvent,
    ErrorData,
    EventChannel,
    MetricsData,
    MetricsEvent,
    StartedData,
    StartedEvent,
    TaskEvent,
    TokenData,
    TokenEvent,
)

STARTED_EV = StartedEvent(
    STARTED, {"queue_position": 0, "predicted_start_ms": 0, "pool_id": "p", "correlation_id": "c"}
)
METRICS_EV = MetricsEvent(
    METRICS,
    {
        "queue_depth": 0,
        "on_time_probability": None,
        "kv_warmth": False,
        "tokens_budget_remaining": None,
        "time_budget_remaining_ms": None,
        "cost_budget_remaining": None,
    },
)


def _end(reason: str = "stop") -> EndEvent:
    return EndEvent(
        END, {"tokens_out": 0, "decode_time_ms": 0, "decode_ms": 0, "finish_reason": reason}
    )


def _drain_all(ch: EventChannel) -> list[TaskEvent]:
    out: list[TaskEvent] = []
    while (ev := ch.get_nowait()) is not None:
        out.append(ev)
    return out


def test_random_interleavings_of_cancel_and_tokens() -> None:
    """10,000 random interleavings: no token after cancel, exactly one terminal."""
    rng = random.Random(1234)
    for _ in range(10_000):
        ch = EventChannel(cap=rng.randint(1, 8))
        ch.offer_unbounded(STARTED_EV)
        delivered: list[TaskEvent] = []
        canceled_at: int | None = None
        for i in range(rng.randint(0, 30)):
            op = rng.random()
            if op < 0.45:
                ch.offer_unbounded(TokenEvent(TOKEN, {"t": "x", "i": i}))
            elif op < 0.55:
                ch.offer(METRICS_EV)
            elif op < 0.9:
                ev = ch.get_nowait()
                if ev is not None:
                    delivered.append(ev)
            elif canceled_at is None:
                ch.cancel(_end("canceled"))
                canceled_at = len(delivered)
            else:
                assert not ch.cancel(_end("canceled"))
        if canceled_at is None:
            ch.cancel(_end("canceled"))
            canceled_at = len(delivered)
        ch.offer_unbounded(TokenEvent(TOKEN, {"t": "late", "i": 99}))
        delivered.extend(_drain_all(ch))
        after = delivered[canceled_at:]
        assert [e.kind for e in after if e.kind == TOKEN] == []
        assert [e.kind for e in delivered].count(END) == 1
        assert delivered[-1].kind == END


async def test_put_waits_for_room_and_never_drops_tokens() -> None:
    ch = EventChannel(cap=2)
    got: list[int] = []

    async def produce() -> None:
        for i in range(50):
            assert await ch.put(TokenEvent(TOKEN, {"t": "x", "i": i}))
        ch.close(_end())

    async def consume() -> None:
        while (ev := await ch.get()) is not None:
            assert len(ch) <= 2
            if ev.kind == TOKEN:
                got.append(ev.data["i"])
            await asyncio.sleep(0)

    await asyncio.gather(produce(), consume())
    assert got == list(range(50))


async def test_put_returns_false_once_closed_and_wakes_a_blocked_producer() -> None:
    ch = EventChannel(cap=1)
    assert await ch.put(TokenEvent(TOKEN, {"t": "x", "i": 0}))
    blocked = asyncio.ensure_future(ch.put(TokenEvent(TOKEN, {"t": "x", "i": 1})))
    await asyncio.sleep(0)
    assert not blocked.done()
    ch.cancel(_end())
    assert await blocked is False
    assert [e.kind for e in _drain_all(ch)] == [END]


def test_metrics_are_dropped_when_full_but_terminal_always_fits() -> None:
    ch = EventChannel(cap=1)
    assert ch.offer(METRICS_EV)
    assert not ch.offer(METRICS_EV)
    assert ch.close(_end())
    assert not ch.close(_end())
    assert [e.kind for e in _drain_all(ch)] == [METRICS, END]


@pytest.mark.parametrize(
    ("typed", "documented"),
    [
        (StartedData, StartedPayload),
        (TokenData, TokenPayload),
        (MetricsData, MetricsPayload),
        (EndData, EndPayload),
        (ErrorData, ErrorPayload),
    ],
)
def test_typed_payloads_match_the_documented_wire_models(
    typed: type, documented: type[BaseModel]
) -> None:
    assert list(typed.__annotations__) == list(documented.model_fields)
