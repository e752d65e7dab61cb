"""Slot choice for session KV affinity (pure)."""

from __future__ import annotations

from app.engine_host.slot_affinity import ANY_SLOT, SlotAffinity


def test_a_session_returns_to_its_slot_unless_it_is_busy_or_taken() -> None:
    aff = SlotAffinity(2)
    a, warm = aff.acquire("a")
    assert (a, warm) == (0, False)
    aff.release(a)
    b, _ = aff.acquire("b")
    assert b == 1  # a slot no session holds, not a's
    aff.release(b)
    assert aff.acquire("a") == (0, True)  # warm: nobody used slot 0 since
    assert aff.acquire("a")[1] is False  # its slot is busy: another one, cold
    assert aff.acquire(None) == (ANY_SLOT, False)  # all busy: the engine queues it


def test_a_slot_used_by_another_request_is_no_longer_warm() -> None:
    aff = SlotAffinity(1)
    slot, _ = aff.acquire("a")
    aff.release(slot)
    slot, _ = aff.acquire(None)
    aff.release(slot)
    assert aff.acquire("a") == (0, False)
