"""Deterministic, explainable placement of one task on one pool.

``decide`` is pure: it reads no clock, does no I/O and keeps no state, so the
same input gives the same decision (and log) whatever the order of the pools.
Policy: drop infeasible pools (unready/loading, draining, engine, model, ctx,
device mask, VRAM, avoided); apply pin / prefer; rank pools with performance
hints by predicted end time ahead of pools without; break ties by session
affinity, least loaded, most free VRAM, higher throughput, then pool id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from operator import attrgetter, itemgetter
from typing import NamedTuple

from app.orchestrator.contracts import PlacementMode, PlacementOverrides, Priority

FILTER_ORDER: tuple[str, ...] = (
    "unready", "draining", "engine", "model", "ctx",
    "device_mask", "vram", "avoided", "not_pinned", "not_preferred",
)  # fmt: skip
"""Machine names of the filters, in the order the policy applies them."""

RANK_KEYS: tuple[str, ...] = (
    "predicted_end", "session_affinity", "least_loaded",
    "most_free_vram", "higher_perf", "pool_id",
)  # fmt: skip
"""Names of the ranking keys, most significant first."""

PREDICTED_END_TOLERANCE_MS = 1e-9
"""Predicted end times closer than this (absolute or relative) count as equal."""

# Positions in a rank key tuple -> the name of the ranking key.
_KEY_NAME_AT = (RANK_KEYS[0], *RANK_KEYS)


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


@dataclass(frozen=True, slots=True)
class PlacementInput:
    """The whole input of one decision: pool snapshots (ids unique) and the job."""

    pools: tuple[PoolSnapshot, ...]
    job: JobSpec


@dataclass(frozen=True, slots=True)
class CandidateNote:
    """Why one pool was selected, filtered out or outranked."""

    pool_id: str
    outcome: str
    reason: str
    filter: str | None = None
    predicted_end_ms: float | None = None


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


@dataclass(frozen=True, slots=True)
class PlacementDecision:
    """The chosen pool (None when there is no capacity) and its log."""

    pool_id: str | None
    log: DecisionLog
    only_unready: bool


_Key = tuple[int, int, int, int, int, float, str]
# (rank key, pool, predicted end ms)
_Ranked = tuple[_Key, PoolSnapshot, float | None]
# pool_id -> (filter name, human reason)
_Drops = dict[str, tuple[str, str]]


class _Rules(NamedTuple):
    """The job's feasibility rules, normalised once per decision."""

    engine: str | None
    model_ref: str | None
    required_ctx: int
    est_kv_bytes: int
    device_mask: str | None
    avoid: frozenset[str]


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
    ranked = _rank(restriction.candidates, job)
    only_unready = not ranked and _any_loading_would_fit(pools, rules, job.overrides)
    log = _build_log(pools, job, ranked, drops, restriction)
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
    )


def _infeasible(pool: PoolSnapshot, rules: _Rules) -> tuple[str, str] | None:
    """Return (filter, reason) for the first rule ``pool`` fails, else None."""
    if pool.loading:
        return ("unready", "loading (not ready yet)")
    if not pool.ready:
        return ("unready", "not ready")
    return _infeasible_when_ready(pool, rules)


def _infeasible_when_ready(pool: PoolSnapshot, rules: _Rules) -> tuple[str, str] | None:
    if pool.draining:
        return ("draining", "draining")
    if rules.engine is not None and rules.engine != pool.engine:
        return ("engine", f"engine {pool.engine} != requested {rules.engine}")
    if not serves_model_ref(rules.model_ref, pool.model, pool.pool_id):
        return ("model", f"model {pool.model} != requested {rules.model_ref}")
    if pool.ctx < rules.required_ctx:
        return ("ctx", f"ctx {pool.ctx} < required {rules.required_ctx}")
    if rules.device_mask is not None:
        mask = normalise_mask(pool.device_mask)
        if mask != rules.device_mask:
            return ("device_mask", f"device mask {mask} != required {rules.device_mask}")
    free = pool.vram_free_bytes
    if rules.est_kv_bytes > 0 and free is not None and free < rules.est_kv_bytes:
        need = _fmt_bytes(rules.est_kv_bytes)
        return ("vram", f"free VRAM {_fmt_bytes(free)} < needed {need}")
    if pool.pool_id in rules.avoid:
        return ("avoided", "avoided")
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
    drops = {p.pool_id: ("not_pinned", f"pinned to {pin}") for p in feasible if p.pool_id != pin}
    return _Restriction(kept, drops, False, None if kept else "pinned_pool_infeasible")


def _restrict_prefer(feasible: list[PoolSnapshot], overrides: PlacementOverrides) -> _Restriction:
    preferred = frozenset(overrides.prefer_pools)
    kept = [p for p in feasible if p.pool_id in preferred]
    if not kept and overrides.allow_fallback:
        reason = None if feasible else "no_feasible_pool"
        return _Restriction(feasible, {}, bool(feasible), reason)
    listed = ", ".join(overrides.prefer_pools)
    drops = {
        p.pool_id: ("not_preferred", f"not among preferred pools ({listed})")
        for p in feasible
        if p.pool_id not in preferred
    }
    return _Restriction(kept, drops, False, None if kept else "no_preferred_feasible")


# ---- ranking ----


def _busy(pool: PoolSnapshot) -> int:
    """Busy slots plus queued tasks."""
    return max(pool.slots_total - pool.slots_free, 0) + pool.queued


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


def _rank(candidates: list[PoolSnapshot], job: JobSpec) -> list[_Ranked]:
    """Return the candidates best first, each with its rank key and predicted end."""
    expected, session = job.expected_tokens, job.session_pool_id
    rows = []
    for pool in candidates:
        busy = _busy(pool)
        rows.append((pool, busy, _predicted_end_ms(pool, busy, expected)))
    groups = _clusters([end for _, _, end in rows if end is not None])
    ranked: list[_Ranked] = []
    for pool, busy, end in rows:
        hint_rank, group = (1, 0) if end is None else (0, groups[end])
        affinity = 0 if pool.pool_id == session else 1
        vram, perf = -(pool.vram_free_bytes or 0), -_perf(pool)
        ranked.append(((hint_rank, group, affinity, busy, vram, perf, pool.pool_id), pool, end))
    ranked.sort(key=itemgetter(0))
    return ranked


def _lost_on(key: _Key, winner: _Key) -> str:
    """Name of the first rank key on which ``key`` differs from ``winner``'s."""
    for name, mine, theirs in zip(_KEY_NAME_AT, key, winner, strict=True):
        if mine != theirs:
            return name
    return RANK_KEYS[-1]


def _tie_breakers(ranked: list[_Ranked], deciding: str, session: str | None) -> tuple[str, ...]:
    """Keys consulted between winner and runner-up, ending with the one that decided.

    Keys that cannot separate any candidate of this decision are skipped:
    ``predicted_end`` when no candidate has hints, ``session_affinity`` when the
    session's pool is not a candidate.
    """
    if len(ranked) < 2:
        return ()
    skip = {"predicted_end"} if ranked[0][2] is None else set()
    if all(entry[1].pool_id != session for entry in ranked):
        skip.add("session_affinity")
    keys = RANK_KEYS[: RANK_KEYS.index(deciding) + 1]
    return tuple(k for k in keys if k not in skip)


# ---- explanations ----


def _fmt_bytes(value: int) -> str:
    if abs(value) >= 1 << 30:
        return f"{value / (1 << 30):.2f} GiB"
    if abs(value) >= 1 << 20:
        return f"{value / (1 << 20):.1f} MiB"
    return f"{value} B"


def _fmt_end(end: float | None) -> str:
    return "no perf hints" if end is None else f"{end:.1f} ms predicted end"


def _loss_detail(name: str, loser: _Ranked, winner: _Ranked, winner_end: str) -> str:
    """Human detail of why ``loser`` ranks below ``winner`` on key ``name``."""
    lp, wp = loser[1], winner[1]
    if name == "predicted_end":
        return f"{_fmt_end(loser[2])} vs {winner_end}"
    if name == "session_affinity":
        return f"the session last ran on {wp.pool_id}"
    if name == "least_loaded":
        return f"{_busy(lp)} busy+queued vs {_busy(wp)}"
    if name == "most_free_vram":
        lv, wv = lp.vram_free_bytes or 0, wp.vram_free_bytes or 0
        return f"{_fmt_bytes(lv)} free VRAM vs {_fmt_bytes(wv)}"
    if name == "higher_perf":
        return f"{_perf(lp):g} tokens/s vs {_perf(wp):g}"
    return f"{lp.pool_id} sorts after {wp.pool_id}"


def _win_phrase(winner: _Ranked, deciding: str | None) -> str:
    """Why the winner won (``deciding``: the key that beat the runner-up), in a few words."""
    pool = winner[1]
    if deciding is None:
        return "only candidate"
    if deciding == "predicted_end":
        return f"lowest predicted end ({winner[2]:.1f} ms)"
    if deciding == "session_affinity":
        return "session affinity"
    if deciding == "least_loaded":
        return f"least loaded ({_busy(pool)} busy+queued)"
    if deciding == "most_free_vram":
        return f"most free VRAM ({_fmt_bytes(pool.vram_free_bytes or 0)})"
    if deciding == "higher_perf":
        return f"highest throughput ({_perf(pool):g} tokens/s)"
    return "first by pool id"


_NO_CAPACITY_TEXT = {
    "pinned_pool_infeasible": "pinned pool {pin} is absent or not feasible",
    "no_preferred_feasible": "no preferred pool is feasible and fallback is off",
    "no_feasible_pool": "no pool is feasible",
}


def _notes_and_summary(
    pools: Sequence[PoolSnapshot], ranked: list[_Ranked], drops: _Drops, head: tuple[str, str]
) -> tuple[tuple[CandidateNote, ...], str]:
    """One note per pool (in pool order) and the one-line summary.

    ``head`` is (summary head, the winner's reason).
    """
    by_id = {entry[1].pool_id: entry for entry in ranked}
    winner = ranked[0] if ranked else None
    winner_end = _fmt_end(winner[2]) if winner else ""
    notes: list[CandidateNote] = []
    parts = [head[0]]
    for pool in pools:
        pool_id = pool.pool_id
        entry = by_id.get(pool_id)
        if entry is None or winner is None:
            name, reason = drops[pool_id]
            notes.append(CandidateNote(pool_id, "filtered", reason, name))
            parts.append(f"{pool_id} skipped: {reason}")
        elif entry is winner:
            notes.append(CandidateNote(pool_id, "selected", head[1], None, entry[2]))
        else:
            name = _lost_on(entry[0], winner[0])
            reason = f"lost on {name}: {_loss_detail(name, entry, winner, winner_end)}"
            notes.append(CandidateNote(pool_id, "outranked", reason, None, entry[2]))
            parts.append(f"{pool_id} lost on {name}")
    return tuple(notes), "; ".join(parts)


def _build_log(
    pools: Sequence[PoolSnapshot],
    job: JobSpec,
    ranked: list[_Ranked],
    drops: _Drops,
    restriction: _Restriction,
) -> DecisionLog:
    overrides, reason = job.overrides, restriction.no_capacity_reason
    deciding = _lost_on(ranked[1][0], ranked[0][0]) if len(ranked) > 1 else None
    if ranked:
        phrase = _win_phrase(ranked[0], deciding)
        head = f"{ranked[0][1].pool_id}: {phrase}"
    else:
        text = _NO_CAPACITY_TEXT[reason or "no_feasible_pool"]
        phrase, head = "", "no pool: " + text.format(pin=overrides.pin_pool_id)
    notes, summary = _notes_and_summary(pools, ranked, drops, (head, phrase))
    used = {name for name, _ in drops.values()}
    return DecisionLog(
        selected_pool_id=ranked[0][1].pool_id if ranked else None,
        candidates_considered=len(pools),
        filters_applied=tuple(f for f in FILTER_ORDER if f in used),
        tie_breakers_applied=_tie_breakers(ranked, deciding or "", job.session_pool_id),
        pinned=overrides.mode is PlacementMode.PIN,
        fallback_used=restriction.fallback_used,
        no_capacity_reason=reason,
        candidates=notes,
        summary=summary,
    )
