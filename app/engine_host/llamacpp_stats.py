"""What a running llama-server reports about itself: busy slots and its metrics.

``EngineStats`` holds the latest ``/slots`` and ``/metrics`` answers of one
engine; the engine's poll task (``poll``) is its only writer. ``EngineMetrics``
is a Prometheus collector that re-exports every pool's ``llamacpp:*`` metrics
with the pool's labels on our own ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import aiohttp
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

_PREFIX = "llamacpp:"


def busy_slots(slots: object) -> int | None:
    """Return how many slots of a ``/slots`` answer are processing, None if malformed. Pure."""
    if not isinstance(slots, list):
        return None
    return sum(1 for slot in slots if isinstance(slot, dict) and slot.get("is_processing"))


def parse_metrics(text: str) -> tuple[Metric, ...]:
    """Return the ``llamacpp:*`` metric families of a Prometheus text answer. Pure.

    Malformed text gives the families parsed before the error.
    """
    found: list[Metric] = []
    with contextlib.suppress(ValueError):
        found.extend(f for f in text_string_to_metric_families(text) if f.name.startswith(_PREFIX))
    return tuple(found)


class EngineStats:
    """The latest self-report of one llama-server (None / empty until the first poll)."""

    def __init__(self) -> None:
        self.busy_slots: int | None = None
        self.slots: list[dict[str, Any]] = []
        self.families: tuple[Metric, ...] = ()

    def clear(self) -> None:
        """Forget the last report (the engine is gone)."""
        self.busy_slots = None
        self.slots = []
        self.families = ()

    async def refresh(
        self, session: aiohttp.ClientSession, base_url: str, headers: Mapping[str, str]
    ) -> None:
        """Read ``/slots`` and ``/metrics`` once. Raises aiohttp errors and TimeoutError."""
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with session.get(f"{base_url}/slots", headers=headers, timeout=timeout) as resp:
            slots = await resp.json() if resp.status == 200 else None
        async with session.get(f"{base_url}/metrics", headers=headers, timeout=timeout) as resp:
            text = await resp.text() if resp.status == 200 else ""
        self.busy_slots = busy_slots(slots)
        self.slots = [s for s in slots if isinstance(s, dict)] if isinstance(slots, list) else []
        self.families = parse_metrics(text)

    async def poll(
        self,
        session: Callable[[], aiohttp.ClientSession],
        base_url: str,
        headers: Mapping[str, str],
        interval_s: float,
    ) -> None:
        """Refresh every ``interval_s`` until cancelled; a failed round keeps the last report."""
        try:
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
                    await self.refresh(session(), base_url, headers)
                await asyncio.sleep(interval_s)
        finally:
            self.clear()


StatsSource = Callable[[], Iterable[tuple[Mapping[str, str], EngineStats]]]


class EngineMetrics(Collector):
    """Re-exports each engine's ``llamacpp:*`` metrics with its pool's labels."""

    def __init__(self, sources: StatsSource) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        """Yield one family per engine metric name, samples labelled per pool. Never blocks."""
        merged: dict[str, Metric] = {}
        for labels, stats in self._sources():
            for family in stats.families:
                out = merged.get(family.name)
                if out is None:
                    out = Metric(family.name, family.documentation, family.type)
                    merged[family.name] = out
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, **labels}, sample.value)
        yield from merged.values()
