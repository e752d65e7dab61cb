"""Session store: TTL with passed-in time, turn limit, budgets, KV warmth."""

from __future__ import annotations

import pytest

from app.orchestrator.contracts import SessionBudgets
from app.orchestrator.sessions import BudgetLimits, SessionStore


def test_touch_creates_and_get_returns() -> None:
    store = SessionStore(ttl_s=10.0)
    created = store.touch("s1", now=100.0)
    assert created.created_at == 100.0 and created.last_used == 100.0
    assert store.get("s1", now=105.0) is created
    assert store.get("other", now=105.0) is None
    assert len(store) == 1


def test_ttl_expiry_uses_passed_in_time() -> None:
    store = SessionStore(ttl_s=10.0)
    store.touch("s1", now=0.0)
    assert store.get("s1", now=9.999) is not None
    assert store.get("s1", now=10.0) is None
    assert len(store) == 0


def test_use_extends_ttl() -> None:
    store = SessionStore(ttl_s=10.0)
    store.touch("s1", now=0.0)
    store.touch("s1", now=8.0)
    assert store.get("s1", now=17.0) is not None
    store.record_turn("s1", "gpu0", tokens=5, time_ms=10, now=17.0)
    assert store.get("s1", now=26.0) is not None


def test_touch_replaces_an_expired_session() -> None:
    store = SessionStore(ttl_s=10.0)
    store.record_turn("s1", "gpu0", tokens=5, time_ms=10, now=0.0)
    fresh = store.touch("s1", now=50.0)
    assert fresh.turns == 0 and fresh.created_at == 50.0 and fresh.last_pool_id is None


def test_expire_removes_and_returns_sorted_ids() -> None:
    store = SessionStore(ttl_s=10.0)
    store.touch("b", now=0.0)
    store.touch("a", now=1.0)
    store.touch("c", now=5.0)
    assert store.expire(now=12.0) == ["a", "b"]
    assert len(store) == 1
    assert store.expire(now=12.0) == []


def test_delete() -> None:
    store = SessionStore()
    store.touch("s1", now=0.0)
    assert store.delete("s1") is True
    assert store.delete("s1") is False
    assert store.get("s1", now=0.0) is None


def test_max_turns() -> None:
    store = SessionStore(max_turns=2)
    assert store.check("s1", 10, now=0.0) is None
    store.record_turn("s1", "gpu0", tokens=1, time_ms=1, now=0.0)
    assert store.check("s1", 10, now=1.0) is None
    store.record_turn("s1", "gpu0", tokens=1, time_ms=1, now=1.0)
    refusal = store.check("s1", 10, now=2.0)
    assert refusal is not None
    assert refusal.limit == "turns"
    assert "all 2 turns" in refusal.message and "max_turns = 2" in refusal.message
    assert "new session" in refusal.message


def test_token_budget() -> None:
    store = SessionStore(budgets=BudgetLimits(tokens=100))
    store.record_turn("s1", "gpu0", tokens=80, time_ms=1, now=0.0)
    assert store.check("s1", 20, now=1.0) is None
    refusal = store.check("s1", 30, now=1.0)
    assert refusal is not None and refusal.limit == "tokens_budget"
    assert "20 tokens left" in refusal.message and "expects 30" in refusal.message


def test_budget_check_of_unknown_session_uses_full_budgets() -> None:
    store = SessionStore(budgets=BudgetLimits(tokens=100))
    assert store.check("new", 100, now=0.0) is None
    refusal = store.check("new", 101, now=0.0)
    assert refusal is not None and refusal.limit == "tokens_budget"


def test_time_budget() -> None:
    store = SessionStore(budgets=BudgetLimits(time_ms=1000))
    store.record_turn("s1", "gpu0", tokens=1, time_ms=999, now=0.0)
    assert store.check("s1", 1, now=1.0) is None
    store.record_turn("s1", "gpu0", tokens=1, time_ms=5, now=1.0)
    refusal = store.check("s1", 1, now=2.0)
    assert refusal is not None and refusal.limit == "time_budget"


def test_cost_budget() -> None:
    store = SessionStore(budgets=BudgetLimits(cost=1.0, cost_per_1k_tokens=10.0))
    store.record_turn("s1", "gpu0", tokens=60, time_ms=1, now=0.0)
    assert store.remaining("s1", now=0.0).cost_remaining == pytest.approx(0.4)
    store.record_turn("s1", "gpu0", tokens=40, time_ms=1, now=0.0)
    refusal = store.check("s1", 1, now=0.0)
    assert refusal is not None and refusal.limit == "cost_budget"


def test_remaining() -> None:
    store = SessionStore(budgets=BudgetLimits(tokens=100, time_ms=500))
    store.record_turn("s1", "gpu0", tokens=130, time_ms=200, now=0.0)
    assert store.remaining("s1", now=0.0) == SessionBudgets(
        tokens_remaining=0, time_remaining_ms=300, cost_remaining=None
    )
    assert store.remaining("ghost", now=0.0) == SessionBudgets(
        tokens_remaining=100, time_remaining_ms=500, cost_remaining=None
    )
    assert SessionStore().remaining("s1", now=0.0) == SessionBudgets()


def test_warm_for_follows_the_last_pool() -> None:
    store = SessionStore(ttl_s=10.0)
    assert store.warm_for("s1", "gpu0", now=0.0) is False
    store.touch("s1", now=0.0)
    assert store.warm_for("s1", "gpu0", now=0.0) is False
    store.record_turn("s1", "gpu0", tokens=5, time_ms=10, now=1.0)
    assert store.warm_for("s1", "gpu0", now=2.0) is True
    assert store.warm_for("s1", "gpu1", now=2.0) is False
    store.record_turn("s1", "gpu1", tokens=5, time_ms=10, now=3.0)  # failover
    assert store.warm_for("s1", "gpu0", now=4.0) is False
    assert store.warm_for("s1", "gpu1", now=4.0) is True
    assert store.warm_for("s1", "gpu1", now=13.0) is False


def test_info() -> None:
    store = SessionStore(ttl_s=10.0, budgets=BudgetLimits(tokens=1000))
    assert store.info("s1", now=0.0) is None
    store.record_turn("s1", "gpu0", tokens=40, time_ms=10, now=1.0, kv_bytes=4096)
    info = store.info("s1", now=3.5)
    assert info is not None
    assert info.session_id == "s1"
    assert info.ttl_ms_remaining == 7500
    assert info.turns == 1
    assert info.kv_bytes == 4096
    assert info.kv_warmth is True and info.kv_migrated is False
    assert info.last_pool_id == "gpu0"
    assert info.budgets.tokens_remaining == 960
    assert info.budgets.time_remaining_ms is None


def test_record_turn_rejects_negative_amounts() -> None:
    with pytest.raises(ValueError, match="negative"):
        SessionStore().record_turn("s1", "gpu0", tokens=-1, time_ms=0, now=0.0)


@pytest.mark.parametrize(
    ("ttl", "turns", "key"), [(0.0, 8, "ttl_s"), (-1.0, 8, "ttl_s"), (10.0, -1, "max_turns")]
)
def test_invalid_settings(ttl: float, turns: int, key: str) -> None:
    with pytest.raises(ValueError, match=rf"must be .*fix \[sessions\] {key}"):
        SessionStore(ttl_s=ttl, max_turns=turns)


def test_zero_max_turns_is_unlimited() -> None:
    store = SessionStore(max_turns=0)
    for n in range(20):
        store.record_turn("s1", "gpu0", tokens=1, time_ms=1, now=float(n))
    assert store.check("s1", 1, now=20.0) is None
