"""Placement policy: filters, overrides, ranking keys and the decision log."""

from __future__ import annotations

from typing import Any

import pytest

from app.orchestrator.contracts import PlacementMode, PlacementOverrides, Priority
from app.orchestrator.placement import (
    FILTER_ORDER,
    CandidateNote,
    JobSpec,
    PlacementDecision,
    PlacementInput,
    PoolSnapshot,
    decide,
    normalise_mask,
    serves_model_ref,
)

GIB = 1 << 30


def pool(pool_id: str, **kw: Any) -> PoolSnapshot:
    fields: dict[str, Any] = {
        "pool_id": pool_id,
        "engine": "llamacpp",
        "engine_version": "0.3.2",
        "model": "tinyllama",
        "ctx": 4096,
        "slots_total": 1,
        "slots_free": 1,
        "queued": 0,
        "vram_total_bytes": 8 * GIB,
        "vram_free_bytes": 4 * GIB,
        "device_mask": "0",
        "compute_capability": "8.9",
        "ready": True,
        "draining": False,
    }
    fields.update(kw)
    return PoolSnapshot(**fields)


def job(overrides: dict[str, Any] | None = None, **kw: Any) -> JobSpec:
    fields: dict[str, Any] = {
        "priority": Priority.INTERACTIVE,
        "engine": None,
        "model_ref": None,
        "required_ctx": 512,
        "expected_tokens": 100,
        "est_kv_bytes": 0,
        "session_pool_id": None,
        "overrides": PlacementOverrides(**(overrides or {})),
    }
    fields.update(kw)
    return JobSpec(**fields)


def place(pools: list[PoolSnapshot], spec: JobSpec | None = None) -> PlacementDecision:
    return decide(PlacementInput(tuple(pools), spec or job()))


def note(decision: PlacementDecision, pool_id: str) -> CandidateNote:
    return next(n for n in decision.log.candidates if n.pool_id == pool_id)


# ---- feasibility filters ----

FILTER_CASES = [
    ("not ready", {"ready": False}, {}, "unready", "not ready"),
    ("loading", {"ready": False, "loading": True}, {}, "unready", "loading"),
    ("draining", {"draining": True}, {}, "draining", "draining"),
    (
        "engine",
        {"engine": "mock"},
        {"engine": "llamacpp"},
        "engine",
        "engine mock != requested llamacpp",
    ),
    ("model", {"model": "qwen"}, {"model_ref": "tinyllama"}, "model", "model qwen"),
    (
        "features",
        {"features": frozenset({"json_schema"})},
        {"needs": frozenset({"tools", "json_schema"})},
        "features",
        "cannot do tools",
    ),
    ("ctx", {"ctx": 2048}, {"required_ctx": 3000}, "ctx", "ctx 2048 < required 3000"),
    (
        "device mask",
        {"device_mask": "0"},
        {"overrides": {"require_device_mask": "1"}},
        "device_mask",
        "device mask 0 != required 1",
    ),
    (
        "vram",
        {"vram_free_bytes": GIB},
        {"est_kv_bytes": 2 * GIB},
        "vram",
        "needs 2.0 GiB, 1.0 GiB free",
    ),
    ("avoided", {}, {"overrides": {"avoid_pools": ["a"]}}, "avoided", "avoided"),
]


@pytest.mark.parametrize(
    ("pool_kw", "job_kw", "filter_name", "reason"),
    [case[1:] for case in FILTER_CASES],
    ids=[case[0] for case in FILTER_CASES],
)
def test_filter_drops_pool_and_says_why(
    pool_kw: dict[str, Any], job_kw: dict[str, Any], filter_name: str, reason: str
) -> None:
    # "a" would win every tie-break (more free VRAM, lower id) if it were feasible.
    other: dict[str, Any] = {"device_mask": "1"} if filter_name == "device_mask" else {}
    if filter_name == "features":
        other = {"features": frozenset({"tools", "json_schema"})}
    pools = [pool("a", **{"vram_free_bytes": 6 * GIB, **pool_kw}), pool("b", **other)]
    decision = place(pools, job(**job_kw))
    assert decision.pool_id == "b"
    dropped = note(decision, "a")
    assert dropped.outcome == "filtered"
    assert dropped.filter == filter_name
    assert reason in dropped.reason
    assert decision.log.filters_applied == (filter_name,)
    assert f"a skipped: {dropped.reason}" in decision.log.summary


def test_model_ref_matches_model_or_pool_id() -> None:
    pools = [pool("a", model="qwen"), pool("b", model="tinyllama")]
    assert place(pools, job(model_ref="tinyllama")).pool_id == "b"
    assert place(pools, job(model_ref="a")).pool_id == "a"
    assert place(pools, job(model_ref="nope")).pool_id is None


def test_unknown_vram_is_not_filtered() -> None:
    decision = place([pool("a", vram_free_bytes=None)], job(est_kv_bytes=GIB))
    assert decision.pool_id == "a"


def test_zero_kv_estimate_ignores_vram() -> None:
    decision = place([pool("a", vram_free_bytes=0)], job(est_kv_bytes=0))
    assert decision.pool_id == "a"


def test_ctx_equal_to_required_fits() -> None:
    assert place([pool("a", ctx=1000)], job(required_ctx=1000)).pool_id == "a"


@pytest.mark.parametrize(
    ("pool_mask", "required", "fits"),
    [("0,1", "0, 1", True), (" 0 , 1", "0,1", True), ("0,1", "1,0", False), ("cpu", "cpu", True)],
)
def test_device_mask_compared_without_spaces(pool_mask: str, required: str, fits: bool) -> None:
    spec = job(overrides={"require_device_mask": required})
    assert (place([pool("a", device_mask=pool_mask)], spec).pool_id == "a") is fits


def test_normalise_mask() -> None:
    assert normalise_mask(" 0, 1 ,2 ") == "0,1,2"


def test_first_failing_filter_is_reported_in_rule_order() -> None:
    decision = place([pool("a", draining=True, ctx=10)], job(engine="openai"))
    assert note(decision, "a").filter == "draining"


def test_filters_applied_in_rule_order() -> None:
    pools = [pool("a", ctx=10), pool("b", draining=True), pool("c", ready=False), pool("d")]
    decision = place(pools)
    assert decision.log.filters_applied == ("unready", "draining", "ctx")
    assert list(decision.log.filters_applied) == [
        f for f in FILTER_ORDER if f in decision.log.filters_applied
    ]


# ---- overrides ----


def test_pin_restricts_to_the_pinned_pool() -> None:
    pools = [pool("a", vram_free_bytes=8 * GIB), pool("b")]
    decision = place(pools, job({"mode": PlacementMode.PIN, "pin_pool_id": "b"}))
    assert decision.pool_id == "b"
    assert decision.log.pinned is True
    assert note(decision, "a").filter == "not_pinned"
    assert note(decision, "a").reason == "pinned to b"
    assert decision.log.filters_applied == ("not_pinned",)


@pytest.mark.parametrize("pin", ["b", "ghost"], ids=["infeasible", "absent"])
def test_pin_to_unavailable_pool_never_falls_back(pin: str) -> None:
    pools = [pool("a"), pool("b", draining=True)]
    overrides = {"mode": PlacementMode.PIN, "pin_pool_id": pin, "allow_fallback": True}
    decision = place(pools, job(overrides))
    assert decision.pool_id is None
    assert decision.log.pinned is True
    assert decision.log.fallback_used is False
    assert decision.log.no_capacity_reason == "pinned_pool_infeasible"
    assert decision.log.summary.startswith(f"no pool: pinned pool {pin}")
    assert decision.only_unready is False


def test_prefer_uses_a_feasible_preferred_pool() -> None:
    pools = [pool("a", vram_free_bytes=8 * GIB), pool("b"), pool("c")]
    decision = place(pools, job({"mode": PlacementMode.PREFER, "prefer_pools": ["c", "b"]}))
    assert decision.pool_id == "b"
    assert decision.log.fallback_used is False
    assert note(decision, "a").filter == "not_preferred"
    assert note(decision, "c").outcome == "outranked"


def test_prefer_falls_back_when_allowed() -> None:
    pools = [pool("a"), pool("b", draining=True)]
    overrides = {"mode": PlacementMode.PREFER, "prefer_pools": ["b"], "allow_fallback": True}
    decision = place(pools, job(overrides))
    assert decision.pool_id == "a"
    assert decision.log.fallback_used is True
    assert decision.log.no_capacity_reason is None


def test_prefer_without_fallback_has_no_capacity() -> None:
    pools = [pool("a"), pool("b", draining=True)]
    overrides = {"mode": PlacementMode.PREFER, "prefer_pools": ["b"], "allow_fallback": False}
    decision = place(pools, job(overrides))
    assert decision.pool_id is None
    assert decision.log.no_capacity_reason == "no_preferred_feasible"
    assert note(decision, "a").filter == "not_preferred"
    assert note(decision, "b").filter == "draining"


def test_avoid_in_any_mode() -> None:
    pools = [pool("a", vram_free_bytes=8 * GIB), pool("b")]
    overrides = {"mode": PlacementMode.PREFER, "prefer_pools": ["a"], "avoid_pools": ["a"]}
    decision = place(pools, job(overrides))
    assert decision.pool_id == "b"
    assert decision.log.fallback_used is True


def test_nothing_feasible() -> None:
    decision = place([pool("a", ctx=100), pool("b", draining=True)])
    assert decision.pool_id is None
    assert decision.log.selected_pool_id is None
    assert decision.log.no_capacity_reason == "no_feasible_pool"
    assert decision.log.summary.startswith("no pool: no pool is feasible")


def test_no_pools_at_all() -> None:
    decision = place([])
    assert decision.pool_id is None
    assert decision.log.candidates == ()
    assert decision.log.no_capacity_reason == "no_feasible_pool"


# ---- only_unready (POOL_UNREADY vs POOL_UNAVAILABLE) ----

UNREADY_CASES = [
    ("loading pool would fit", [pool("a", ready=False, loading=True)], {}, True),
    ("loading pool too small", [pool("a", ready=False, loading=True, ctx=10)], {}, False),
    ("stopped pool", [pool("a", ready=False)], {}, False),
    ("loading but draining", [pool("a", ready=False, loading=True, draining=True)], {}, False),
    (
        "pinned pool loading",
        [pool("a"), pool("b", ready=False, loading=True)],
        {"mode": PlacementMode.PIN, "pin_pool_id": "b"},
        True,
    ),
    (
        "pinned elsewhere",
        [pool("a", draining=True), pool("b", ready=False, loading=True)],
        {"mode": PlacementMode.PIN, "pin_pool_id": "a"},
        False,
    ),
    (
        "loading pool not preferred",
        [pool("a", draining=True), pool("b", ready=False, loading=True)],
        {"mode": PlacementMode.PREFER, "prefer_pools": ["a"], "allow_fallback": False},
        False,
    ),
    (
        "loading pool avoided",
        [pool("a", ready=False, loading=True)],
        {"avoid_pools": ["a"]},
        False,
    ),
]


@pytest.mark.parametrize(
    ("pools", "overrides", "expected"),
    [case[1:] for case in UNREADY_CASES],
    ids=[case[0] for case in UNREADY_CASES],
)
def test_only_unready(pools: list[PoolSnapshot], overrides: dict[str, Any], expected: bool) -> None:
    decision = place(pools, job(overrides))
    assert decision.pool_id is None
    assert decision.only_unready is expected


def test_only_unready_false_when_a_pool_is_selected() -> None:
    decision = place([pool("a", ready=False, loading=True), pool("b")])
    assert decision.pool_id == "b"
    assert decision.only_unready is False


# ---- ranking: each key decides alone ----

HINTS = {"perf_tokens_per_s": 100.0, "first_token_ms": 50.0}

RANK_CASES: list[tuple[str, list[PoolSnapshot], dict[str, Any], str, tuple[str, ...], str]] = [
    (
        "a free slot beats queueing behind a known pool",
        [pool("a", **HINTS, slots_free=0), pool("b")],
        {},
        "b",
        ("starts_now",),
        "lost on starts_now: would wait behind 1 busy+queued; b has a free slot",
    ),
    (
        "a free slot beats session affinity",
        [pool("a"), pool("b", slots_free=0)],
        {"session_pool_id": "b"},
        "a",
        ("starts_now",),
        "lost on starts_now: would wait behind 1 busy+queued; a has a free slot",
    ),
    (
        "predicted end",
        [
            pool("a", vram_free_bytes=8 * GIB, **HINTS, slots_total=2, slots_free=1),
            pool("b", vram_free_bytes=GIB, **HINTS, slots_total=2, slots_free=2, queued=0),
        ],
        {},
        "b",
        ("predicted_end",),
        "lost on predicted_end: 1550.0 ms predicted end vs 1050.0 ms predicted end",
    ),
    (
        "missing hints do not lose to known hints",
        [pool("a", **HINTS), pool("b", vram_free_bytes=8 * GIB)],
        {},
        "b",
        ("most_free_vram",),
        "lost on most_free_vram: 4.00 GiB free VRAM vs 8.00 GiB",
    ),
    (
        "session affinity",
        [pool("a", vram_free_bytes=8 * GIB), pool("b")],
        {"session_pool_id": "b"},
        "b",
        ("session_affinity",),
        "lost on session_affinity: the session's KV cache is on b",
    ),
    (
        "affinity holds within the margin",
        [pool("a", **HINTS), pool("b", perf_tokens_per_s=100.0, first_token_ms=100.0)],
        {"session_pool_id": "b"},
        "b",
        ("session_affinity",),
        "lost on session_affinity: the session's KV cache is on b, "
        "and 1050.0 ms is not 20% sooner than its 1100.0 ms",
    ),
    (
        "a clearly sooner pool beats affinity",
        [
            pool("a", perf_tokens_per_s=200.0, first_token_ms=50.0),
            pool("b", perf_tokens_per_s=100.0, first_token_ms=100.0),
        ],
        {"session_pool_id": "b"},
        "a",
        ("predicted_end",),
        "lost on predicted_end: 1100.0 ms predicted end vs 550.0 ms predicted end",
    ),
    (
        "least loaded",
        [
            pool("a", vram_free_bytes=8 * GIB, slots_total=2, slots_free=1),
            pool("b", slots_total=2, slots_free=2),
        ],
        {},
        "b",
        ("least_loaded",),
        "lost on least_loaded: 1 busy+queued vs 0",
    ),
    (
        "most free vram",
        [pool("a", vram_free_bytes=None, perf_tokens_per_s=90.0), pool("b")],
        {},
        "b",
        ("most_free_vram",),
        "lost on most_free_vram: 0 B free VRAM vs 4.00 GiB",
    ),
    (
        "higher perf",
        [pool("a", perf_tokens_per_s=None), pool("b", perf_tokens_per_s=40.0)],
        {},
        "b",
        ("higher_perf",),
        "lost on higher_perf: 0 tokens/s vs 40",
    ),
    (
        "pool id",
        [pool("b"), pool("a")],
        {},
        "a",
        ("pool_id",),
        "lost on pool_id: b sorts after a",
    ),
    (
        "equal predicted end falls through",
        [
            pool("a", perf_tokens_per_s=100.0, first_token_ms=600.0),
            pool("b", perf_tokens_per_s=200.0, first_token_ms=1100.0 + 1e-12),
        ],
        {"expected_tokens": 100},
        "b",
        ("higher_perf",),
        "lost on higher_perf: 100 tokens/s vs 200",
    ),
    (
        "session pool not a candidate",
        [pool("a", slots_total=2, slots_free=1), pool("b"), pool("c", draining=True)],
        {"session_pool_id": "c"},
        "b",
        ("least_loaded",),
        "lost on least_loaded: 1 busy+queued vs 0",
    ),
]


@pytest.mark.parametrize(
    ("pools", "job_kw", "winner", "tie_breakers", "loser_reason"),
    [case[1:] for case in RANK_CASES],
    ids=[case[0] for case in RANK_CASES],
)
def test_ranking_key_decides(
    pools: list[PoolSnapshot],
    job_kw: dict[str, Any],
    winner: str,
    tie_breakers: tuple[str, ...],
    loser_reason: str,
) -> None:
    decision = place(pools, job(**job_kw))
    assert decision.pool_id == winner
    assert decision.log.tie_breakers_applied == tie_breakers
    loser = next(n for n in decision.log.candidates if n.pool_id != winner and n.filter is None)
    assert loser.outcome == "outranked"
    assert loser.reason == loser_reason
    assert loser.rank_key == loser_reason.removeprefix("lost on ").partition(":")[0]
    selected = note(decision, winner)
    assert selected.outcome == "selected"
    assert selected.rank == 0 and loser.rank == 1
    assert selected.rank_key == decision.log.deciding_key == tie_breakers[-1]


def test_predicted_end_formula() -> None:
    # decode = 200 / 100 * 1000 = 2000; wait = (1 busy + 1 queued) / 2 slots * 2000 = 2000
    busy = pool(
        "a", slots_total=2, slots_free=1, queued=1, perf_tokens_per_s=100.0, first_token_ms=50.0
    )
    decision = place([busy], job(expected_tokens=200))
    assert note(decision, "a").predicted_end_ms == pytest.approx(2000.0 + 50.0 + 2000.0)


@pytest.mark.parametrize("tps", [0.0, -5.0, 1e-308, float("nan"), float("inf")])
def test_unusable_perf_hints_count_as_none(tps: float) -> None:
    pools = [pool("a", perf_tokens_per_s=tps, first_token_ms=10.0), pool("b", **HINTS)]
    decision = place(pools)
    assert decision.pool_id == "b"
    assert note(decision, "a").predicted_end_ms is None


def test_single_candidate_needs_no_tie_breaker() -> None:
    decision = place([pool("a"), pool("b", draining=True)])
    assert decision.log.tie_breakers_applied == ()
    assert note(decision, "a").reason == "only candidate"
    assert decision.log.summary == "a: only candidate; b skipped: draining"


# ---- the decision log ----


def test_log_has_one_note_per_pool_sorted_by_id() -> None:
    pools = [pool("c"), pool("a", draining=True), pool("b", ctx=1)]
    decision = place(pools)
    assert [n.pool_id for n in decision.log.candidates] == ["a", "b", "c"]
    assert decision.log.candidates_considered == 3
    assert all(n.reason for n in decision.log.candidates)
    assert {n.outcome for n in decision.log.candidates} == {"selected", "filtered"}


def test_summary_names_winner_and_skipped_pools() -> None:
    pools = [pool("gpu0", device_mask="0"), pool("gpu1", device_mask="1", vram_free_bytes=GIB)]
    decision = place(pools, job({"require_device_mask": "1"}))
    assert decision.log.summary == (
        "gpu1: only candidate; gpu0 skipped: device mask 0 != required 1"
    )
    decision = place(
        [*pools, pool("gpu2", device_mask="1", queued=2)], job({"require_device_mask": "1"})
    )
    assert decision.log.summary == (
        "gpu1: free slot now; gpu0 skipped: device mask 0 != required 1; gpu2 lost on starts_now"
    )


def test_same_input_any_order_same_decision() -> None:
    pools = [pool("a", queued=1), pool("b", **HINTS), pool("c", draining=True), pool("d")]
    first = place(pools)
    assert place(list(reversed(pools))) == first
    assert place(pools[2:] + pools[:2]) == first


def test_duplicate_pool_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="two snapshots of pool 'a'"):
        place([pool("a"), pool("a", queued=1)])


def test_a_model_ref_names_a_pool_by_model_or_id() -> None:
    assert serves_model_ref(None, "llama", "gpu0")
    assert serves_model_ref("llama", "llama", "gpu0")
    assert serves_model_ref("gpu0", "llama", "gpu0")
    assert not serves_model_ref("mistral", "llama", "gpu0")
