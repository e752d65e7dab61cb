"""Deterministic, explainable placement of one task on one pool.

``decide`` is pure: it reads no clock, does no I/O and keeps no state, so the
same input gives the same decision (and log) whatever the order of the pools.
Policy: drop infeasible pools (unready/loading, draining, engine, model, ctx,
device mask, VRAM, avoided); apply pin / prefer; rank the rest with the keys
of ``ranking.RANKING`` (free slot now, session affinity, predicted end, least
loaded, most free VRAM, higher throughput, pool id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from operator import attrgetter
from typing import NamedTuple

from app.orchestrator.contracts import (
    CandidateOutcome,
    PlacementMode,
    PlacementOverrides,
    Priority,
)
from app.orchestrator.ranking import (
    KEY_BY_NAME,
    RANK_KEYS,
    RankContext,
    Ranked,
    lost_on,
    rank,
    tie_breakers,
)
from app.orchestrator.vram import gib

FILTER_ORDER: tuple[str, ...] = (
    "unready", "draining", "engine", "model", "features", "ctx",
    "device_mask", "vram", "avoided", "not_pinned", "not_preferred",
)  # fmt: skip
"""Machine names of the filters, in the order the policy applies them."""


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """One pool as placement sees it at one instant."""

    pool_id: str
    engine: str
    engine_version: str
    model: str
    ctx: int
    slots_total: int
    slots_free: int
    queued: int
    vram_total_bytes: int | None
    vram_free_bytes: int | None
    device_mask: str
    compute_capability: str | None
    ready: bool
    draining: bool
    loading: bool = False
    perf_tokens_per_s: float | None = None
    first_token_ms: float | None = None
    vram_need_bytes: int = 0
    """VRAM the pool still needs free on its GPUs to serve (its model's estimate
    less what its engine already holds there); 0 when unknown or resident."""
    features: frozenset[str] = frozenset()
    """What the pool's engine can do beyond plain decoding (tools, json_schema, ...)."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What placement needs to know about one task."""

    priority: Priority
    engine: str | None
    model_ref: str | None
    required_ctx: int
    expected_tokens: int
    est_kv_bytes: int
    session_pool_id: str | None
    overrides: PlacementOverrides
    needs: frozenset[str] = frozenset()
    """Engine features the task asks for (its response_format, tools, logprobs)."""


@dataclass(frozen=True, slots=True)
class PlacementInput:
    """The whole input of one decision: pool snapshots (ids unique) and the job."""

    pools: tuple[PoolSnapshot, ...]
    job: JobSpec


@dataclass(frozen=True, slots=True)
class CandidateNote:
    """Why one pool was selected, filtered out or outranked."""

    pool_id: str
    outcome: CandidateOutcome
    reason: str
    filter: str | None = None
    predicted_end_ms: float | None = None
    rank_key: str | None = None
    rank: int | None = None
    vram_need_bytes: int | None = None
    """VRAM the pool needs free to take the job (set when the VRAM filter dropped it)."""
    vram_free_bytes: int | None = None
    """VRAM free on the pool's GPUs then (set when the VRAM filter dropped it)."""


@dataclass(frozen=True, slots=True)
class DecisionLog:
    """The explanation of one decision (see ``decide``)."""

    selected_pool_id: str | None
    candidates_considered: int
    filters_applied: tuple[str, ...]
    tie_breakers_applied: tuple[str, ...]
    pinned: bool
    fallback_used: bool
    no_capacity_reason: str | None
    candidates: tuple[CandidateNote, ...]
    summary: str
    deciding_key: str | None = None


@dataclass(frozen=True, slots=True)
class PlacementDecision:
    """The chosen pool (None when there is no capacity) and its log."""

    pool_id: str | None
    log: DecisionLog
    only_unready: bool


class _Drop(NamedTuple):
    """Why a pool was left out: the filter's name, the human reason, and for the
    VRAM filter the bytes it needs and the bytes free."""

    filter: str
    reason: str
    need_bytes: int | None = None
    free_bytes: int | None = None


_Drops = dict[str, _Drop]


class _Rules(NamedTuple):
    """The job's feasibility rules, normalised once per decision."""

    engine: str | None
    model_ref: str | None
    required_ctx: int
    est_kv_bytes: int
    device_mask: str | None
    avoid: frozenset[str]
    needs: frozenset[str]


class _Restriction(NamedTuple):
    """The outcome of applying the overrides to the feasible pools."""

    candidates: list[PoolSnapshot]
    drops: _Drops
    fallback_used: bool
    no_capacity_reason: str | None


def decide(inp: PlacementInput) -> PlacementDecision:
    """Choose a pool for ``inp.job`` among ``inp.pools``.

    Returns a ``PlacementDecision`` whose ``pool_id`` is None when no pool can
    take the job (``log.no_capacity_reason`` says why). The log holds one note
    per input pool, sorted by pool id. Pure and non-blocking.

    Raises ``ValueError`` when two snapshots share a pool id.
    """
    pools = sorted(inp.pools, key=attrgetter("pool_id"))
    _require_unique_ids(pools)
    job = inp.job
    rules = _rules_of(job)
    drops: _Drops = {}
    feasible: list[PoolSnapshot] = []
    for pool in pools:
        why = _infeasible(pool, rules)
        if why is None:
            feasible.append(pool)
        else:
            drops[pool.pool_id] = why
    restriction = _restrict(feasible, job.overrides)
    drops.update(restriction.drops)
    ranking = rank(restriction.candidates, job)
    only_unready = not ranking[0] and _any_loading_would_fit(pools, rules, job.overrides)
    log = _build_log(pools, job, ranking, drops, restriction)
    return PlacementDecision(log.selected_pool_id, log, only_unready)


def serves_model_ref(model_ref: str | None, model: str, pool_id: str) -> bool:
    """Return True when ``model_ref`` names a pool: None (any pool), its model id or
    its pool id. The one model-matching rule. Pure."""
    return model_ref is None or model_ref in (model, pool_id)


def normalise_mask(mask: str) -> str:
    """Return ``mask`` without whitespace ("0, 1" -> "0,1"). Pure."""
    return "".join(mask.split())


# ---- feasibility ----


def _require_unique_ids(pools: Sequence[PoolSnapshot]) -> None:
    for before, after in pairwise(pools):
        if before.pool_id == after.pool_id:
            raise ValueError(
                f"placement got two snapshots of pool {before.pool_id!r}; "
                "pass exactly one snapshot per pool"
            )


def _rules_of(job: JobSpec) -> _Rules:
    required = job.overrides.require_device_mask
    return _Rules(
        job.engine,
        job.model_ref,
        job.required_ctx,
        job.est_kv_bytes,
        None if required is None else normalise_mask(required),
        frozenset(job.overrides.avoid_pools),
        job.needs,
    )


def _infeasible(pool: PoolSnapshot, rules: _Rules) -> _Drop | None:
    """Return (filter, reason) for the first rule ``pool`` fails, else None."""
    if pool.loading:
        return _Drop("unready", "loading (not ready yet)")
    if not pool.ready:
        return _Drop("unready", "not ready")
    return _infeasible_when_ready(pool, rules)


def _infeasible_when_ready(pool: PoolSnapshot, rules: _Rules) -> _Drop | None:
    if pool.draining:
        return _Drop("draining", "draining")
    if rules.engine is not None and rules.engine != pool.engine:
        return _Drop("engine", f"engine {pool.engine} != requested {rules.engine}")
    if not serves_model_ref(rules.model_ref, pool.model, pool.pool_id):
        return _Drop("model", f"model {pool.model} != requested {rules.model_ref}")
    missing = rules.needs - pool.features
    if missing:
        return _Drop("features", f"engine {pool.engine} cannot do {', '.join(sorted(missing))}")
    if pool.ctx < rules.required_ctx:
        return _Drop("ctx", f"ctx {pool.ctx} < required {rules.required_ctx}")
    if rules.device_mask is not None:
        mask = normalise_mask(pool.device_mask)
        if mask != rules.device_mask:
            return _Drop("device_mask", f"device mask {mask} != required {rules.device_mask}")
    free = pool.vram_free_bytes
    needed = max(rules.est_kv_bytes, pool.vram_need_bytes)
    if needed > 0 and free is not None and free < needed:
        return _Drop("vram", f"needs {gib(needed)} GiB, {gib(free)} GiB free", needed, free)
    if pool.pool_id in rules.avoid:
        return _Drop("avoided", "avoided")
    return None


def _any_loading_would_fit(
    pools: Iterable[PoolSnapshot], rules: _Rules, overrides: PlacementOverrides
) -> bool:
    """True when some loading pool would take the job once it is ready."""
    return any(
        pool.loading
        and _infeasible_when_ready(pool, rules) is None
        and _overrides_admit(pool.pool_id, overrides)
        for pool in pools
    )


def _overrides_admit(pool_id: str, overrides: PlacementOverrides) -> bool:
    if overrides.mode is PlacementMode.PIN:
        return pool_id == overrides.pin_pool_id
    if overrides.mode is PlacementMode.PREFER and not overrides.allow_fallback:
        return pool_id in overrides.prefer_pools
    return True


# ---- overrides ----


def _restrict(feasible: list[PoolSnapshot], overrides: PlacementOverrides) -> _Restriction:
    """Apply pin / prefer to the feasible pools (sorted by id)."""
    if overrides.mode is PlacementMode.PIN:
        return _restrict_pin(feasible, overrides.pin_pool_id or "")
    if overrides.mode is PlacementMode.PREFER:
        return _restrict_prefer(feasible, overrides)
    return _Restriction(feasible, {}, False, None if feasible else "no_feasible_pool")


def _restrict_pin(feasible: list[PoolSnapshot], pin: str) -> _Restriction:
    kept = [p for p in feasible if p.pool_id == pin]
    drops = {
        p.pool_id: _Drop("not_pinned", f"pinned to {pin}") for p in feasible if p.pool_id != pin
    }
    return _Restriction(kept, drops, False, None if kept else "pinned_pool_infeasible")


def _restrict_prefer(feasible: list[PoolSnapshot], overrides: PlacementOverrides) -> _Restriction:
    preferred = frozenset(overrides.prefer_pools)
    kept = [p for p in feasible if p.pool_id in preferred]
    if not kept and overrides.allow_fallback:
        reason = None if feasible else "no_feasible_pool"
        return _Restriction(feasible, {}, bool(feasible), reason)
    listed = ", ".join(overrides.prefer_pools)
    drops = {
        p.pool_id: _Drop("not_preferred", f"not among preferred pools ({listed})")
        for p in feasible
        if p.pool_id not in preferred
    }
    return _Restriction(kept, drops, False, None if kept else "no_preferred_feasible")


# ---- explanations ----


_NO_CAPACITY_TEXT = {
    "pinned_pool_infeasible": "pinned pool {pin} is absent or not feasible",
    "no_preferred_feasible": "no preferred pool is feasible and fallback is off",
    "no_feasible_pool": "no pool is feasible",
}


def _notes_and_summary(
    pools: Sequence[PoolSnapshot],
    ranked: list[Ranked],
    drops: _Drops,
    head: tuple[str, str],
    ctx: RankContext,
) -> tuple[tuple[CandidateNote, ...], str]:
    """One note per pool (in pool order) and the one-line summary.

    ``head`` is (summary head, the winner's reason).
    """
    by_id = {entry[1].pool.pool_id: (rank, entry) for rank, entry in enumerate(ranked)}
    winner = ranked[0] if ranked else None
    deciding = lost_on(ranked[1][0], ranked[0][0]) if len(ranked) > 1 else None
    notes: list[CandidateNote] = []
    parts = [head[0]]
    for pool in pools:
        pool_id = pool.pool_id
        found = by_id.get(pool_id)
        if found is None or winner is None:
            drop = drops[pool_id]
            notes.append(_filtered_note(pool_id, drop))
            parts.append(f"{pool_id} skipped: {drop.reason}")
            continue
        rank, (key, row) = found
        if rank == 0:
            notes.append(CandidateNote(pool_id, "selected", head[1], None, row.end, deciding, 0))
            continue
        name = lost_on(key, winner[0])
        detail = KEY_BY_NAME[name].lost(row, winner[1], ctx)
        reason = f"lost on {name}: {detail}"
        notes.append(CandidateNote(pool_id, "outranked", reason, None, row.end, name, rank))
        parts.append(f"{pool_id} lost on {name}")
    return tuple(notes), "; ".join(parts)


def _filtered_note(pool_id: str, drop: _Drop) -> CandidateNote:
    return CandidateNote(
        pool_id, "filtered", drop.reason, drop.filter,
        vram_need_bytes=drop.need_bytes, vram_free_bytes=drop.free_bytes,
    )  # fmt: skip


def _build_log(
    pools: Sequence[PoolSnapshot],
    job: JobSpec,
    ranking: tuple[list[Ranked], RankContext],
    drops: _Drops,
    restriction: _Restriction,
) -> DecisionLog:
    ranked, ctx = ranking
    overrides, reason = job.overrides, restriction.no_capacity_reason
    deciding = lost_on(ranked[1][0], ranked[0][0]) if len(ranked) > 1 else None
    if ranked:
        winner = ranked[0][1]
        phrase = KEY_BY_NAME[deciding].won(winner, ctx) if deciding else "only candidate"
        head = f"{winner.pool.pool_id}: {phrase}"
    else:
        text = _NO_CAPACITY_TEXT[reason or "no_feasible_pool"]
        phrase, head = "", "no pool: " + text.format(pin=overrides.pin_pool_id)
    notes, summary = _notes_and_summary(pools, ranked, drops, (head, phrase), ctx)
    used = {drop.filter for drop in drops.values()}
    return DecisionLog(
        selected_pool_id=ranked[0][1].pool.pool_id if ranked else None,
        candidates_considered=len(pools),
        filters_applied=tuple(f for f in FILTER_ORDER if f in used),
        tie_breakers_applied=tie_breakers(ranked, deciding or RANK_KEYS[-1]),
        pinned=overrides.mode is PlacementMode.PIN,
        fallback_used=restriction.fallback_used,
        no_capacity_reason=reason,
        candidates=notes,
        summary=summary,
        deciding_key=deciding,
    )
