"""The NVML GPU inventory; the only module that imports ``pynvml``.

"No GPU" is a value, not an exception: a missing library or driver gives an
empty inventory with one actionable hint, and a field that fails to read is
``None``. ``NvmlInventory.read`` blocks on the driver, so it belongs on a
worker thread (see ``gpu_poller.GpuPoller``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from app.orchestrator.ports import Clock, GpuInfo, GpuInventory, SystemClock

_T = TypeVar("_T")

CPU_FALLBACK = "or run CPU-only pools with allow_cpu_inference = true."
NO_GPU_HINT = (
    "NVML found no GPU. Check that `nvidia-smi -L` lists your GPU (seated, powered, "
    f"driver loaded), {CPU_FALLBACK}"
)

_MIB = 1024**2
_GIB = 1024**3


class NvmlUnavailableError(Exception):
    """Raised by a backend's ``init`` when NVML cannot start.

    ``driver_missing`` is True when the NVML library or the kernel driver is
    absent (as opposed to a broken or inaccessible one).
    """

    def __init__(self, message: str, *, driver_missing: bool) -> None:
        super().__init__(message)
        self.message = message
        self.driver_missing = driver_missing


@dataclass(frozen=True, slots=True)
class MemoryInfo:
    """Device memory in bytes."""

    total: int
    free: int
    used: int


class NvmlBackend(Protocol):
    """The subset of NVML the inventory uses. Every call blocks; any call may raise.

    ``init`` raises ``NvmlUnavailableError`` (or any exception) when NVML cannot start.
    """

    def init(self) -> None: ...

    def shutdown(self) -> None: ...

    def driver_version(self) -> str: ...

    def cuda_version(self) -> str: ...

    def device_count(self) -> int: ...

    def handle(self, index: int) -> object: ...

    def name(self, handle: object) -> str: ...

    def uuid(self, handle: object) -> str: ...

    def memory(self, handle: object) -> MemoryInfo: ...

    def utilization_pct(self, handle: object) -> float: ...

    def compute_capability(self, handle: object) -> tuple[int, int]: ...

    def temperature_c(self, handle: object) -> float: ...

    def power_w(self, handle: object) -> float: ...

    def compute_processes(self, handle: object) -> Sequence[tuple[int, int | None]]:
        """Return (pid, used VRAM bytes or None when NVML does not say) pairs."""
        ...


class PynvmlBackend:
    """``NvmlBackend`` over the ``pynvml`` module (package nvidia-ml-py), imported lazily."""

    def __init__(self) -> None:
        self._nv: Any = None

    def init(self) -> None:
        """Load pynvml and start NVML. Raises NvmlUnavailableError. Blocks."""
        try:
            import pynvml
        except ImportError as exc:
            msg = f"the NVML Python binding is missing ({exc}); install nvidia-ml-py"
            raise NvmlUnavailableError(msg, driver_missing=False) from exc
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            absent = (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
            missing = getattr(exc, "value", None) in absent
            raise NvmlUnavailableError(str(exc), driver_missing=missing) from exc
        self._nv = pynvml

    def shutdown(self) -> None:
        if self._nv is not None:
            nv, self._nv = self._nv, None
            nv.nvmlShutdown()

    def driver_version(self) -> str:
        return _text(self._nv.nvmlSystemGetDriverVersion())

    def cuda_version(self) -> str:
        """Return the CUDA version the driver supports, e.g. "12.4"."""
        version = int(self._nv.nvmlSystemGetCudaDriverVersion_v2())
        return f"{version // 1000}.{version % 1000 // 10}"

    def device_count(self) -> int:
        return int(self._nv.nvmlDeviceGetCount())

    def handle(self, index: int) -> object:
        return self._nv.nvmlDeviceGetHandleByIndex(index)

    def name(self, handle: object) -> str:
        return _text(self._nv.nvmlDeviceGetName(handle))

    def uuid(self, handle: object) -> str:
        return _text(self._nv.nvmlDeviceGetUUID(handle))

    def memory(self, handle: object) -> MemoryInfo:
        info = self._nv.nvmlDeviceGetMemoryInfo(handle)
        return MemoryInfo(total=int(info.total), free=int(info.free), used=int(info.used))

    def utilization_pct(self, handle: object) -> float:
        return float(self._nv.nvmlDeviceGetUtilizationRates(handle).gpu)

    def compute_capability(self, handle: object) -> tuple[int, int]:
        major, minor = self._nv.nvmlDeviceGetCudaComputeCapability(handle)
        return int(major), int(minor)

    def temperature_c(self, handle: object) -> float:
        nv = self._nv
        return float(nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))

    def power_w(self, handle: object) -> float:
        return float(self._nv.nvmlDeviceGetPowerUsage(handle)) / 1000.0

    def compute_processes(self, handle: object) -> Sequence[tuple[int, int | None]]:
        procs = self._nv.nvmlDeviceGetComputeRunningProcesses(handle)
        return [(int(p.pid), _optional_int(p.usedGpuMemory)) for p in procs]


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def init_failure_hint(exc: BaseException) -> str:
    """Return the one actionable hint shown when NVML cannot start because of ``exc``."""
    if isinstance(exc, NvmlUnavailableError) and exc.driver_missing:
        return (
            f"No NVIDIA driver found (NVML: {exc.message}). Install the NVIDIA driver "
            f"and reboot, {CPU_FALLBACK}"
        )
    if isinstance(exc, NvmlUnavailableError) and "nvidia-ml-py" in exc.message:
        return f"GPU discovery is off: {exc.message}, {CPU_FALLBACK}"
    detail = exc.message if isinstance(exc, NvmlUnavailableError) else f"{exc!s}"
    return (
        f"NVML could not start (NVML: {detail or type(exc).__name__}). Check that "
        f"`nvidia-smi` works for this user, {CPU_FALLBACK}"
    )


class NvmlInventory:
    """Reads a ``GpuInventory`` through an ``NvmlBackend``; never raises.

    NVML is started on the first ``read`` and kept open until ``close``; a
    failed start is retried on the next read. ``engine_pids`` is called from
    the reading thread and must be thread-safe.
    """

    def __init__(
        self,
        backend: NvmlBackend | None = None,
        clock: Clock | None = None,
        engine_pids: Callable[[], Collection[int]] = lambda: (),
    ) -> None:
        self._backend: NvmlBackend = backend if backend is not None else PynvmlBackend()
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._engine_pids = engine_pids
        self._started = False

    def read(self, *, with_processes: bool = True) -> GpuInventory:
        """Return a fresh snapshot; per-process VRAM only when ``with_processes``.

        BLOCKS on NVML (milliseconds per GPU): call it from a worker thread.
        Never raises: failures become a hint or ``None`` fields.
        """
        at = self._clock.time()
        hint = self._start()
        if hint is not None:
            return GpuInventory(gpus=(), at=at, hint=hint)
        try:
            count = self._backend.device_count()
        except Exception as exc:
            self.close()
            return GpuInventory(gpus=(), at=at, hint=init_failure_hint(exc))
        driver = _guard(self._backend.driver_version)
        cuda = _guard(self._backend.cuda_version)
        if count <= 0:
            return GpuInventory(
                gpus=(), at=at, hint=NO_GPU_HINT, driver_version=driver, cuda_version=cuda
            )
        pids = self._pids() if with_processes else frozenset()
        gpus = tuple(self._read_gpu(i, pids, with_processes) for i in range(count))
        return GpuInventory(gpus=gpus, at=at, hint=None, driver_version=driver, cuda_version=cuda)

    def close(self) -> None:
        """Shut NVML down if it was started. Never raises. Blocks briefly."""
        if self._started:
            self._started = False
            with contextlib.suppress(Exception):
                self._backend.shutdown()

    def _start(self) -> str | None:
        if self._started:
            return None
        try:
            self._backend.init()
        except Exception as exc:
            return init_failure_hint(exc)
        self._started = True
        return None

    def _pids(self) -> frozenset[int]:
        try:
            return frozenset(self._engine_pids())
        except Exception:
            return frozenset()

    def _read_gpu(self, index: int, pids: frozenset[int], with_processes: bool) -> GpuInfo:
        b = self._backend
        handle = _guard(lambda: b.handle(index))
        if handle is None:
            return _unreadable_gpu(index)
        mem = _guard(lambda: b.memory(handle))
        cc = _guard(lambda: b.compute_capability(handle))
        return GpuInfo(
            index=index,
            uuid=_guard(lambda: b.uuid(handle)),
            name=_guard(lambda: b.name(handle)),
            vram_total_bytes=mem.total if mem is not None else None,
            vram_free_bytes=mem.free if mem is not None else None,
            vram_used_bytes=mem.used if mem is not None else None,
            utilization_pct=_guard(lambda: b.utilization_pct(handle)),
            compute_capability=f"{cc[0]}.{cc[1]}" if cc is not None else None,
            temperature_c=_guard(lambda: b.temperature_c(handle)),
            power_w=_guard(lambda: b.power_w(handle)),
            process_vram_bytes=self._processes(handle, pids) if with_processes else (),
        )

    def _processes(self, handle: object, pids: frozenset[int]) -> tuple[tuple[int, int], ...]:
        if not pids:
            return ()
        procs = _guard(lambda: self._backend.compute_processes(handle)) or ()
        found = ((pid, used) for pid, used in procs if pid in pids and used is not None)
        return tuple(sorted(found))


def _guard(read: Callable[[], _T]) -> _T | None:
    """Return ``read()``, or None when it raises (one unreadable field)."""
    try:
        return read()
    except Exception:
        return None


def _unreadable_gpu(index: int) -> GpuInfo:
    return GpuInfo(
        index=index,
        uuid=None,
        name=None,
        vram_total_bytes=None,
        vram_free_bytes=None,
        vram_used_bytes=None,
        utilization_pct=None,
        compute_capability=None,
        temperature_c=None,
        power_w=None,
    )


def format_bytes(value: int | None) -> str:
    """Return ``value`` as "512 MiB" / "23.6 GiB", or "n/a" for None."""
    if value is None:
        return "n/a"
    if value >= _GIB:
        return f"{value / _GIB:.1f} GiB"
    return f"{value / _MIB:.0f} MiB"


def _fmt(value: float | str | None, spec: str = "", unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:{spec}}{unit}"


_COLUMNS = ("GPU", "NAME", "VRAM USED", "VRAM TOTAL", "FREE", "UTIL", "TEMP", "POWER", "CC")


def _row(gpu: GpuInfo) -> tuple[str, ...]:
    return (
        str(gpu.index),
        _fmt(gpu.name),
        format_bytes(gpu.vram_used_bytes),
        format_bytes(gpu.vram_total_bytes),
        format_bytes(gpu.vram_free_bytes),
        _fmt(gpu.utilization_pct, ".0f", "%"),
        _fmt(gpu.temperature_c, ".0f", " C"),
        _fmt(gpu.power_w, ".0f", " W"),
        _fmt(gpu.compute_capability),
    )


def format_inventory(inv: GpuInventory) -> str:
    """Return a human-readable table of ``inv`` (for ``llama-orch gpus``).

    An empty inventory yields its hint. Missing fields show as "n/a".
    """
    lines = [f"NVIDIA driver {inv.driver_version}"] if inv.driver_version else []
    if not inv.gpus:
        return "\n".join([*lines, f"No GPU found. {inv.hint or NO_GPU_HINT}"])
    rows = [_COLUMNS, *(_row(g) for g in inv.gpus)]
    widths = [max(len(r[c]) for r in rows) for c in range(len(_COLUMNS))]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i > 0:
            lines += _process_lines(inv.gpus[i - 1])
    if inv.hint:
        lines.append(inv.hint)
    return "\n".join(lines)


def _process_lines(gpu: GpuInfo) -> list[str]:
    uuid = [f"    uuid {gpu.uuid}"] if gpu.uuid else []
    return uuid + [f"    engine pid {p}: {format_bytes(b)}" for p, b in gpu.process_vram_bytes]


def inventory_to_json(inv: GpuInventory) -> dict[str, Any]:
    """Return ``inv`` as JSON-ready data (for ``llama-orch gpus --json``); None stays null."""
    return {
        "at": inv.at,
        "driver_version": inv.driver_version,
        "hint": inv.hint,
        "gpus": [_gpu_to_json(g) for g in inv.gpus],
    }


def _gpu_to_json(gpu: GpuInfo) -> dict[str, Any]:
    return {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "vram_total_bytes": gpu.vram_total_bytes,
        "vram_free_bytes": gpu.vram_free_bytes,
        "vram_used_bytes": gpu.vram_used_bytes,
        "utilization_pct": gpu.utilization_pct,
        "compute_capability": gpu.compute_capability,
        "temperature_c": gpu.temperature_c,
        "power_w": gpu.power_w,
        "processes": [{"pid": p, "vram_bytes": b} for p, b in gpu.process_vram_bytes],
    }
