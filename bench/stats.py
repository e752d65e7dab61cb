"""Percentiles and the summary of a batch of streams (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.client import StreamResult


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (``fraction`` in 0..1); NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def steady_rate(results: Sequence[StreamResult]) -> float:
    """Return tokens/s while every stream was running (last first token to first last token).

    NaN when the streams never all overlapped.
    """
    done = [r for r in results if r.arrivals]
    if not done:
        return math.nan
    begin = max(r.arrivals[0] for r in done)
    end = min(r.arrivals[-1] for r in done)
    if end <= begin:
        return math.nan
    tokens = sum(1 for r in done for t in r.arrivals if begin < t <= end)
    return tokens / (end - begin)


def summarize(results: Sequence[StreamResult]) -> dict[str, Any]:
    """Return the figures of a batch: counts, rates and latency percentiles in ms."""
    ok = [r for r in results if r.error is None]
    errors = [r.error for r in results if r.error is not None]
    ttfts = [r.ttft * 1000 for r in ok if r.ttft is not None]
    gaps = [g * 1000 for r in ok for g in r.gaps()]
    tokens = sum(r.tokens for r in results)
    start = min((r.start for r in results), default=0.0)
    last = max((r.arrivals[-1] for r in results if r.arrivals), default=start)
    wall = last - start
    return {
        "streams": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall if wall > 0 else math.nan,
        "steady_tokens_per_s": steady_rate(ok),
        "ttft_p50_ms": percentile(ttfts, 0.50),
        "ttft_p99_ms": percentile(ttfts, 0.99),
        "gap_p50_ms": percentile(gaps, 0.50),
        "gap_p99_ms": percentile(gaps, 0.99),
        "gap_max_ms": max(gaps, default=math.nan),
    }


def added(direct: dict[str, Any], through: dict[str, Any], key: str) -> float:
    """Return ``through[key] - direct[key]`` (the orchestrator's addition)."""
    return float(through[key]) - float(direct[key])


def ratio(direct: dict[str, Any], through: dict[str, Any], key: str) -> float:
    """Return ``through[key] / direct[key]``; NaN when direct is zero."""
    d = float(direct[key])
    return float(through[key]) / d if d else math.nan
