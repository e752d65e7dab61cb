"""The per-task channel: cancel races and terminal events."""

from __future__ import annotations

import asyncio
import random

from app.orchestrator.events import (
    END,
    METRICS,
    STARTED,
    TOKEN,
    EndEvent,
    EventChannel,
    MetricsEvent,
    StartedEvent,
    TaskEvent,
    TokenEvent,
)


def _drain_all(ch: EventChannel) -> list[TaskEvent]:
    out = []
    while (ev := ch.get_nowait()) is not None:
        out.append(ev)
    return out


def test_random_interleavings_of_cancel_and_tokens() -> None:
    """10,000 random interleavings: no token after cancel, exactly one terminal."""
    rng = random.Random(1234)
    for _ in range(10_000):
        ch = EventChannel(cap=rng.randint(1, 8))
        ch.offer_unbounded(StartedEvent(STARTED, {}))
        delivered: list[TaskEvent] = []
        canceled_at: int | None = None
        for i in range(rng.randint(0, 30)):
            op = rng.random()
            if op < 0.45:
                ch.offer_unbounded(TokenEvent(TOKEN, {"t": "x", "i": i}))
            elif op < 0.55:
                ch.offer(MetricsEvent(METRICS, {}))
            elif op < 0.9:
                ev = ch.get_nowait()
                if ev is not None:
                    delivered.append(ev)
            elif canceled_at is None:
                ch.cancel(EndEvent(END, {"finish_reason": "canceled"}))
                canceled_at = len(delivered)
            else:
                assert not ch.cancel(EndEvent(END, {"finish_reason": "canceled"}))
        if canceled_at is None:
            ch.cancel(EndEvent(END, {"finish_reason": "canceled"}))
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
        ch.close(EndEvent(END, {}))

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
    assert await ch.put(TokenEvent(TOKEN, {"i": 0}))
    blocked = asyncio.ensure_future(ch.put(TokenEvent(TOKEN, {"i": 1})))
    await asyncio.sleep(0)
    assert not blocked.done()
    ch.cancel(EndEvent(END, {}))
    assert await blocked is False
    assert [e.kind for e in _drain_all(ch)] == [END]


def test_metrics_are_dropped_when_full_but_terminal_always_fits() -> None:
    ch = EventChannel(cap=1)
    assert ch.offer(MetricsEvent(METRICS, {}))
    assert not ch.offer(MetricsEvent(METRICS, {}))
    assert ch.close(EndEvent(END, {}))
    assert not ch.close(EndEvent(END, {}))
    assert [e.kind for e in _drain_all(ch)] == [METRICS, END]
