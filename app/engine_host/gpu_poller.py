"""A worker thread that polls the NVML inventory and publishes immutable snapshots.

``GpuPoller`` implements ``app.orchestrator.ports.GpuProbe``: ``snapshot()``
returns the latest ``GpuInventory`` without touching NVML. Subscribers are
called through the ``dispatch`` function given at construction (in production
``loop.call_soon_threadsafe``), so they run on the asyncio loop, never on the
worker thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from app.engine_host.nvml import NvmlInventory
from app.orchestrator.ports import Clock, GpuInfo, GpuInventory, SystemClock

logger = logging.getLogger("llama_orch.nvml")

Subscriber = Callable[[GpuInventory], None]
Dispatch = Callable[[Callable[[], None]], object]
_Procs = tuple[tuple[int, int], ...]

NOT_READ_YET_HINT = "The GPU inventory has not been read yet."


class InventoryReader(Protocol):
    """What the poller needs from ``NvmlInventory``."""

    def read(self, *, with_processes: bool = True) -> GpuInventory: ...

    def close(self) -> None: ...


def _call_now(callback: Callable[[], None]) -> None:
    callback()


class GpuPoller:
    """Polls ``reader`` every ``interval_s`` on a daemon thread; a ``GpuProbe``.

    Per-process VRAM is refreshed at most every ``process_interval_s``; in
    between, each GPU keeps the process list of the last full read.
    Raises ValueError for a non-positive interval.
    """

    def __init__(
        self,
        reader: InventoryReader | None = None,
        *,
        dispatch: Dispatch = _call_now,
        interval_s: float = 1.0,
        process_interval_s: float = 5.0,
        clock: Clock | None = None,
        join_timeout_s: float = 5.0,
    ) -> None:
        if interval_s <= 0 or process_interval_s <= 0:
            msg = (
                f"GPU poll intervals must be positive seconds, got interval_s={interval_s} "
                f"and process_interval_s={process_interval_s}"
            )
            raise ValueError(msg)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._reader: InventoryReader = reader if reader is not None else NvmlInventory()
        self._dispatch = dispatch
        self._interval_s = interval_s
        self._process_interval_s = max(process_interval_s, interval_s)
        self._join_timeout_s = join_timeout_s
        self._snapshot = GpuInventory(gpus=(), at=self._clock.time(), hint=NOT_READ_YET_HINT)
        self._subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()
        self._first = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_process_read: float | None = None
        self._logged_hint: str | None = None

    def snapshot(self) -> GpuInventory:
        """Return the latest inventory. Never blocks, never raises."""
        return self._snapshot

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(snapshot)`` via ``dispatch`` after every poll.

        Returns a function that unsubscribes. Never blocks.
        """
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

        return unsubscribe

    def start(self) -> None:
        """Start the polling thread (no-op when running). Returns at once."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="gpu-poller", daemon=True
        )
        self._thread.start()

    def stop(self) -> bool:
        """Stop polling and wait up to ``join_timeout_s`` for the thread.

        Returns True when the thread has ended (NVML is then shut down).
        Blocks for at most ``join_timeout_s``.
        """
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(self._join_timeout_s)
        return not thread.is_alive()

    def wait_first(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until the first poll finished; returns whether it did."""
        return self._first.wait(timeout_s)

    def poll_once(self) -> GpuInventory:
        """Read the inventory now, store it and notify subscribers; returns the snapshot.

        BLOCKS on NVML; the polling thread calls it, tests may call it directly.
        Never raises.
        """
        now = self._clock.monotonic()
        due = self._last_process_read is None or (
            now - self._last_process_read >= self._process_interval_s
        )
        inv = self._read(with_processes=due)
        if due:
            self._last_process_read = now
        else:
            inv = _keep_processes(inv, self._snapshot)
        self._snapshot = inv
        self._first.set()
        self._log_hint(inv)
        self._notify(inv)
        return inv

    def _read(self, *, with_processes: bool) -> GpuInventory:
        try:
            return self._reader.read(with_processes=with_processes)
        except Exception as exc:  # a reader must not raise; keep polling if one does
            hint = f"Reading the GPU inventory failed: {exc!r}"
            return GpuInventory(gpus=(), at=self._clock.time(), hint=hint)

    def _run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.poll_once()
                stop.wait(self._interval_s)
        finally:
            self._reader.close()

    def _log_hint(self, inv: GpuInventory) -> None:
        if inv.gpus:
            self._logged_hint = None
        if inv.gpus or inv.hint is None or inv.hint == self._logged_hint:
            return
        self._logged_hint = inv.hint
        logger.warning("%s", inv.hint)

    def _notify(self, inv: GpuInventory) -> None:
        for subscriber in self._subscribers:
            try:
                self._dispatch(_deliver(subscriber, inv))
            except Exception:  # e.g. RuntimeError from a closed event loop
                logger.debug("GPU snapshot not delivered", exc_info=True)


def _deliver(subscriber: Subscriber, inv: GpuInventory) -> Callable[[], None]:
    def call() -> None:
        try:
            subscriber(inv)
        except Exception:
            logger.exception("A GPU inventory subscriber failed")

    return call


def _keep_processes(inv: GpuInventory, previous: GpuInventory) -> GpuInventory:
    """Return ``inv`` with each GPU's process list taken from ``previous``.

    GPUs are matched by (index, uuid), so a replaced device never inherits a list.
    """
    old = {(g.index, g.uuid): g.process_vram_bytes for g in previous.gpus if g.process_vram_bytes}
    if not old:
        return inv
    return replace(inv, gpus=tuple(_with_processes(g, old) for g in inv.gpus))


def _with_processes(gpu: GpuInfo, old: dict[tuple[int, str | None], _Procs]) -> GpuInfo:
    procs = old.get((gpu.index, gpu.uuid))
    return replace(gpu, process_vram_bytes=procs) if procs else gpu
