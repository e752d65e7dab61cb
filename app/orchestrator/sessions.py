"""Sessions: time-to-live, a turn limit and token/time/cost budgets.

The store never reads a clock: every method that depends on time takes
``now`` (seconds on a monotonic clock). No logging, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.orchestrator.contracts import SessionBudgets, SessionInfo
from app.orchestrator.guardrails import GuardrailRefusal, check_budgets


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """Per-session limits; None means unlimited."""

    tokens: int | None = None
    time_ms: int | None = None
    cost: float | None = None
    cost_per_1k_tokens: float = 0.0


NO_LIMITS = BudgetLimits()


@dataclass(slots=True)
class Session:
    """One conversation's state. Mutated only by its ``SessionStore``."""

    session_id: str
    created_at: float
    last_used: float
    turns: int = 0
    tokens_used: int = 0
    time_used_ms: int = 0
    cost_used: float = 0.0
    last_pool_id: str | None = None
    kv_bytes: int = 0
    kv_warmth: bool = False
    kv_migrated: bool = False


class SessionStore:
    """Sessions with TTL, turn limit and budgets. Time is passed in; no clock reads.

    A session expires ``ttl_s`` seconds after it was last used. Mutable; owned
    by one caller. No method blocks.
    """

    def __init__(
        self, ttl_s: float = 600.0, max_turns: int = 8, budgets: BudgetLimits = NO_LIMITS
    ) -> None:
        """``max_turns`` 0 means unlimited.

        Raises ``ValueError`` when ``ttl_s`` is not positive or ``max_turns`` is negative.
        """
        if not ttl_s > 0:
            raise ValueError(
                f"session ttl must be > 0 seconds, got {ttl_s!r}; fix [sessions] ttl_s"
            )
        if max_turns < 0:
            raise ValueError(
                f"max_turns must be 0 (unlimited) or more, got {max_turns}; "
                "fix [sessions] max_turns"
            )
        self.ttl_s = float(ttl_s)
        self.max_turns = max_turns
        self.budgets = budgets
        self._sessions: dict[str, Session] = {}

    def touch(self, session_id: str, now: float) -> Session:
        """Return the live session ``session_id``, creating it when absent or expired.

        Marks it used at ``now``.
        """
        session = self.get(session_id, now)
        if session is None:
            session = Session(session_id, created_at=now, last_used=now)
            self._sessions[session_id] = session
        session.last_used = now
        return session

    def get(self, session_id: str, now: float) -> Session | None:
        """Return the session, or None when absent or expired (an expired one is removed)."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if self._expired(session, now):
            del self._sessions[session_id]
            return None
        return session

    def check(self, session_id: str, expected_tokens: int, now: float) -> GuardrailRefusal | None:
        """Return a refusal when the session has no turn or budget left for the task, else None.

        An absent or expired session is checked as a new one (full budgets).
        """
        session = self.get(session_id, now)
        if session is not None and 0 < self.max_turns <= session.turns:
            return GuardrailRefusal(
                "turns",
                f"session {session_id} has used all {self.max_turns} turns "
                f"(max_turns = {self.max_turns}); start a new session with a new session_id",
            )
        left = self.remaining(session_id, now)
        return check_budgets(
            expected_tokens, left.tokens_remaining, left.time_remaining_ms, left.cost_remaining
        )

    def record_turn(
        self,
        session_id: str,
        pool_id: str,
        tokens: int,
        time_ms: int,
        now: float,
        *,
        kv_bytes: int | None = None,
    ) -> None:
        """Count one finished turn on ``pool_id`` and consume its budgets.

        After the turn the session's KV cache lives on ``pool_id`` (warm, not
        migrated). A session that expired while the turn ran is kept alive.
        Raises ``ValueError`` on negative ``tokens``, ``time_ms`` or ``kv_bytes``.
        """
        if tokens < 0 or time_ms < 0 or (kv_bytes is not None and kv_bytes < 0):
            raise ValueError(
                f"a turn cannot use negative amounts (tokens={tokens}, time_ms={time_ms}, "
                f"kv_bytes={kv_bytes})"
            )
        session = self._sessions.get(session_id)
        if session is None:
            session = self.touch(session_id, now)
        session.last_used = now
        session.turns += 1
        session.tokens_used += tokens
        session.time_used_ms += time_ms
        session.cost_used += tokens * self.budgets.cost_per_1k_tokens / 1000.0
        session.last_pool_id = pool_id
        session.kv_warmth = True
        session.kv_migrated = False
        if kv_bytes is not None:
            session.kv_bytes = kv_bytes

    def warm_for(self, session_id: str, pool_id: str, now: float) -> bool:
        """True iff the session is live and its last turn ran on ``pool_id``."""
        session = self.get(session_id, now)
        return session is not None and session.last_pool_id == pool_id

    def info(self, session_id: str, now: float) -> SessionInfo | None:
        """Return the session as the wire model, or None when absent or expired."""
        session = self.get(session_id, now)
        if session is None:
            return None
        ttl_left = max(0, int((session.last_used + self.ttl_s - now) * 1000))
        budgets = self.remaining(session_id, now)
        return SessionInfo(
            session_id=session.session_id,
            ttl_ms_remaining=ttl_left,
            turns=session.turns,
            kv_bytes=session.kv_bytes,
            kv_warmth=session.kv_warmth,
            kv_migrated=session.kv_migrated,
            last_pool_id=session.last_pool_id,
            budgets=budgets,
            tokens_budget_remaining=budgets.tokens_remaining,
            time_budget_remaining_ms=budgets.time_remaining_ms,
            cost_budget_remaining=budgets.cost_remaining,
        )

    def delete(self, session_id: str) -> bool:
        """Forget the session; returns True if it existed."""
        return self._sessions.pop(session_id, None) is not None

    def expire(self, now: float) -> list[str]:
        """Remove the sessions expired at ``now``; returns their ids, sorted."""
        gone = sorted(sid for sid, s in self._sessions.items() if self._expired(s, now))
        for sid in gone:
            del self._sessions[sid]
        return gone

    def remaining(self, session_id: str, now: float) -> SessionBudgets:
        """Return what is left of each budget (None = unlimited; never below zero).

        An absent or expired session has its full budgets.
        """
        session = self.get(session_id, now)
        limits = self.budgets
        used = session or Session(session_id, created_at=now, last_used=now)
        return SessionBudgets(
            tokens_remaining=None
            if limits.tokens is None
            else max(0, limits.tokens - used.tokens_used),
            time_remaining_ms=None
            if limits.time_ms is None
            else max(0, limits.time_ms - used.time_used_ms),
            cost_remaining=None if limits.cost is None else max(0.0, limits.cost - used.cost_used),
        )

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now >= session.last_used + self.ttl_s
