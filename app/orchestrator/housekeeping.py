"""Periodic upkeep of the core: expired sessions are swept and the GPU gauges follow
the latest NVML snapshot.

``gpu_gauge_values`` is pure; ``Housekeeper`` runs ``tick`` on the orchestrator's
loop every ``housekeeping_interval_s`` (one timer, never per token).
"""

from __future__ import annotations

import asyncio
import contextlib

from app.orchestrator.device_mask import device_indices
from app.orchestrator.ports import GpuInventory
from app.orchestrator.state import CoreState
from app.orchestrator.tasklog import log

GaugeRow = tuple[str, float | None, int | None]


def gpu_gauge_values(inventory: GpuInventory) -> list[GaugeRow]:
    """Return (device, utilization %, VRAM used bytes) per GPU; None where unread.

    VRAM used falls back to total - free when NVML gave no used figure.
    """
    rows: list[GaugeRow] = []
    for gpu in inventory.gpus:
        used = gpu.vram_used_bytes
        if used is None and gpu.vram_total_bytes is not None and gpu.vram_free_bytes is not None:
            used = gpu.vram_total_bytes - gpu.vram_free_bytes
        rows.append((str(gpu.index), gpu.utilization_pct, used))
    return rows


class Housekeeper:
    """Owns the core's upkeep timer. All methods run on the orchestrator's loop."""

    def __init__(self, state: CoreState) -> None:
        self._st = state
        self._timer: asyncio.TimerHandle | None = None
        self._devices: set[tuple[str, ...]] = set()

    def start(self) -> None:
        """Run ``tick`` now and then every interval until ``stop``. Never blocks."""
        self.stop()
        self.tick()

    def stop(self) -> None:
        """Cancel the pending tick, if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def tick(self) -> None:
        """Sweep expired sessions and publish the GPU gauges, then re-arm the timer."""
        try:
            self.sweep_sessions()
            self.publish_gpu(self._st.gpu_probe.snapshot())
        except Exception:
            log.exception("housekeeping failed")
        interval = self._st.config.housekeeping_interval_s
        if interval > 0 and not self._st.closing:
            self._timer = asyncio.get_running_loop().call_later(interval, self.tick)

    def sweep_sessions(self) -> list[str]:
        """Forget the sessions expired by now; returns their ids (sorted)."""
        gone = self._st.sessions.expire(self._st.clock.monotonic())
        if gone:
            log.debug("swept %d expired sessions", len(gone))
        return gone

    def publish_gpu(self, inventory: GpuInventory) -> None:
        """Set gpu_utilization and vram_used_bytes per device and pool on it (empty pool
        labels for a device no pool uses); drop the series of vanished devices."""
        metrics = self._st.metrics
        seen: set[tuple[str, ...]] = set()
        for device, util, used in gpu_gauge_values(inventory):
            for identity in self._identities_on(int(device)):
                labels = (*identity, device)
                seen.add(labels)
                if util is not None:
                    metrics.gpu_utilization.labels(*labels).set(util)
                if used is not None:
                    metrics.vram_used_bytes.labels(*labels).set(used)
        for gone in self._devices - seen:
            for gauge in (metrics.gpu_utilization, metrics.vram_used_bytes):
                with contextlib.suppress(KeyError):
                    gauge.remove(*gone)
        self._devices = seen

    def _identities_on(self, device: int) -> list[tuple[str, str, str, str]]:
        """Return the identity labels of the pools whose device mask names ``device``."""
        metrics = self._st.metrics
        found = [
            metrics.identity(p.engine.descriptor)
            for p in self._st.pools.values()
            if device in device_indices(p.engine.descriptor.device_mask)
        ]
        return found or [("", "", "", "")]
