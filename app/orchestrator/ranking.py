"""Ranking of the feasible pools: the rank keys, each rule and its words written once.

``rank`` is pure: candidates in, candidates best first out, each with its rank
key (one value per entry of ``RANKING``; lower wins). Keys, most significant
first: a free slot now beats queueing (identical pools serve at the same
time); session affinity (the pool holding the session's KV cache keeps it
unless another predicts an end clearly sooner); predicted end (compared only
when every candidate has perf hints, so a fresh pool never loses for lacking
history); least loaded; most free VRAM; higher throughput; pool id.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.orchestrator.placement import JobSpec, PoolSnapshot

PREDICTED_END_TOLERANCE_MS = 1e-9
"""Predicted end times closer than this (absolute or relative) count as equal."""

SESSION_AFFINITY_MARGIN = 0.2
"""A session's task leaves the pool holding its KV cache only for a pool that
starts it now while that one would queue, or that predicts an end at least this
fraction (20%) sooner."""


@dataclass(frozen=True, slots=True)
class Row:
    """One candidate as the ranking keys see it."""

    pool: PoolSnapshot
    busy: int
    end: float | None  # predicted end (ms), None without usable hints


@dataclass(frozen=True, slots=True)
class RankContext:
    """What the ranking keys compare against: the whole candidate set."""

    session: Row | None  # the candidate that holds the session's KV cache
    groups: dict[float, int] | None  # predicted end -> group; None unless all have hints


@dataclass(frozen=True, slots=True)
class RankKey:
    """One ranking key: its value (lower wins), why a loser lost, why a winner won."""

    name: str
    value: Callable[[Row, RankContext], float | str]
    lost: Callable[[Row, Row, RankContext], str]
    won: Callable[[Row, RankContext], str]


RankValue = tuple[float | str, ...]
Ranked = tuple[RankValue, Row]


def busy_of(pool: PoolSnapshot) -> int:
    """Busy slots plus queued tasks."""
    return max(pool.slots_total - pool.slots_free, 0) + pool.queued


def _starts_now(pool: PoolSnapshot) -> bool:
    """True when a slot is free for this task without waiting behind queued ones."""
    return pool.slots_free > pool.queued


def _perf(pool: PoolSnapshot) -> float:
    """Tokens per second for ranking; unknown or non-finite counts as 0."""
    tps = pool.perf_tokens_per_s
    return tps if tps is not None and math.isfinite(tps) else 0.0


def _predicted_end_ms(pool: PoolSnapshot, busy: int, expected_tokens: int) -> float | None:
    """Queue wait + first token + decode time, or None without usable hints."""
    tps, first = pool.perf_tokens_per_s, pool.first_token_ms
    if tps is None or first is None or not math.isfinite(first) or not math.isfinite(tps):
        return None
    if tps <= 0:
        return None
    decode = expected_tokens / tps * 1000.0
    end = busy / max(pool.slots_total, 1) * decode + first + decode
    return end if math.isfinite(end) else None


def _clusters(values: list[float]) -> dict[float, int]:
    """Map each value to a group index; values within tolerance of a neighbour share one.

    Depends only on the set of values, so it is independent of input order.
    """
    groups: dict[float, int] = {}
    ordered = sorted(set(values))
    index, previous, tol = 0, ordered[0] if ordered else 0.0, PREDICTED_END_TOLERANCE_MS
    for value in ordered:
        # Same test as math.isclose(value, previous, rel_tol=tol, abs_tol=tol).
        if value - previous > tol * max(1.0, abs(value), abs(previous)):
            index += 1
        groups[value] = index
        previous = value
    return groups


def _clearly_sooner(row: Row, session: Row) -> bool:
    """True when ``row`` predicts an end SESSION_AFFINITY_MARGIN sooner than the session pool."""
    if row.end is None or session.end is None:
        return False
    return row.end < session.end * (1.0 - SESSION_AFFINITY_MARGIN)


def _affinity(row: Row, ctx: RankContext) -> float:
    """0 for the session's pool and for pools clearly sooner than it, else 1."""
    session = ctx.session
    if session is None or row is session or _clearly_sooner(row, session):
        return 0
    return 1


def _end_group(row: Row, ctx: RankContext) -> float:
    """The predicted-end group; all 0 unless every candidate has usable hints."""
    if ctx.groups is None or row.end is None:
        return 0
    return ctx.groups[row.end]


def fmt_end(end: float | None) -> str:
    return "no perf hints" if end is None else f"{end:.1f} ms predicted end"


def _affinity_lost(loser: Row, winner: Row, ctx: RankContext) -> str:
    session = ctx.session
    holder = session.pool.pool_id if session else winner.pool.pool_id
    if session is None or loser.end is None or session.end is None:
        return f"the session's KV cache is on {holder}"
    pct = f"{SESSION_AFFINITY_MARGIN:.0%}"
    return (
        f"the session's KV cache is on {holder}, and {loser.end:.1f} ms is not {pct} "
        f"sooner than its {session.end:.1f} ms"
    )


def _vram(row: Row) -> str:
    return fmt_bytes(row.pool.vram_free_bytes or 0)


RANKING: tuple[RankKey, ...] = (
    RankKey(
        "starts_now",
        lambda r, _c: 0 if _starts_now(r.pool) else 1,
        lambda lo, w, _c: (
            f"would wait behind {lo.busy} busy+queued; {w.pool.pool_id} has a free slot"
        ),
        lambda _w, _c: "free slot now",
    ),
    RankKey(
        "session_affinity",
        _affinity,
        _affinity_lost,
        lambda w, _c: f"session affinity (KV cache on {w.pool.pool_id})",
    ),
    RankKey(
        "predicted_end",
        _end_group,
        lambda lo, w, _c: f"{fmt_end(lo.end)} vs {fmt_end(w.end)}",
        lambda w, _c: f"lowest predicted end ({w.end or 0.0:.1f} ms)",
    ),
    RankKey(
        "least_loaded",
        lambda r, _c: r.busy,
        lambda lo, w, _c: f"{lo.busy} busy+queued vs {w.busy}",
        lambda w, _c: f"least loaded ({w.busy} busy+queued)",
    ),
    RankKey(
        "most_free_vram",
        lambda r, _c: -(r.pool.vram_free_bytes or 0),
        lambda lo, w, _c: f"{_vram(lo)} free VRAM vs {_vram(w)}",
        lambda w, _c: f"most free VRAM ({_vram(w)})",
    ),
    RankKey(
        "higher_perf",
        lambda r, _c: -_perf(r.pool),
        lambda lo, w, _c: f"{_perf(lo.pool):g} tokens/s vs {_perf(w.pool):g}",
        lambda w, _c: f"highest throughput ({_perf(w.pool):g} tokens/s)",
    ),
    RankKey(
        "pool_id",
        lambda r, _c: r.pool.pool_id,
        lambda lo, w, _c: f"{lo.pool.pool_id} sorts after {w.pool.pool_id}",
        lambda _w, _c: "first by pool id",
    ),
)
"""The ranking keys, most significant first: the one place each key's rule and words live."""

RANK_KEYS: tuple[str, ...] = tuple(key.name for key in RANKING)
"""Names of the ranking keys, most significant first."""

KEY_BY_NAME = {key.name: key for key in RANKING}


def rank(candidates: list[PoolSnapshot], job: JobSpec) -> tuple[list[Ranked], RankContext]:
    """Return the candidates best first, each with its rank key, and the ranking context."""
    rows = []
    for pool in candidates:
        busy = busy_of(pool)
        rows.append(Row(pool, busy, _predicted_end_ms(pool, busy, job.expected_tokens)))
    session = next((r for r in rows if r.pool.pool_id == job.session_pool_id), None)
    ends = [r.end for r in rows if r.end is not None]
    ctx = RankContext(session, _clusters(ends) if len(ends) == len(rows) else None)
    ranked = [(tuple(key.value(row, ctx) for key in RANKING), row) for row in rows]
    ranked.sort(key=itemgetter(0))
    return ranked, ctx


def lost_on(key: RankValue, winner: RankValue) -> str:
    """Name of the first rank key on which ``key`` differs from ``winner``'s."""
    for name, mine, theirs in zip(RANK_KEYS, key, winner, strict=True):
        if mine != theirs:
            return name
    return RANK_KEYS[-1]


def tie_breakers(ranked: list[Ranked], deciding: str) -> tuple[str, ...]:
    """Keys consulted between winner and runner-up, ending with the one that decided.

    Keys on which every candidate of this decision has the same value are
    skipped: they separate nobody.
    """
    if len(ranked) < 2:
        return ()
    last = RANK_KEYS.index(deciding)
    return tuple(
        name
        for i, name in enumerate(RANK_KEYS[: last + 1])
        if len({entry[0][i] for entry in ranked}) > 1
    )


def fmt_bytes(value: int) -> str:
    if abs(value) >= 1 << 30:
        return f"{value / (1 << 30):.2f} GiB"
    if abs(value) >= 1 << 20:
        return f"{value / (1 << 20):.1f} MiB"
    return f"{value} B"
