"""A recording fake of the NVML library (the true boundary) and GPUs to fill it with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.engine_host.nvml import (
    MemoryInfo,
)

GIB = 1024**3


MIB = 1024**2


@dataclass
class FakeGpu:
    name: str
    uuid: str
    total: int
    used: int
    cc: tuple[int, int]
    util: float = 10.0
    temp: float = 50.0
    power: float = 120.5
    processes: Sequence[tuple[int, int | None]] = ()
    failing: frozenset[str] = frozenset()


@dataclass
class FakeClock:
    now: float = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now


@dataclass
class FakeNvml:
    """A scripted NvmlBackend; handles are indexes. Records every call by name."""

    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: Exception | None = None
    driver: str = "550.54.14"
    count_error: Exception | None = None
    calls: list[str] = field(default_factory=list)

    def init(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise self.init_error

    def shutdown(self) -> None:
        self.calls.append("shutdown")

    def driver_version(self) -> str:
        return self.driver

    def cuda_version(self) -> str:
        return "12.4"

    def device_count(self) -> int:
        if self.count_error is not None:
            raise self.count_error
        return len(self.gpus)

    def handle(self, index: int) -> object:
        return index

    def _field(self, handle: object, name: str) -> FakeGpu:
        self.calls.append(name)
        assert isinstance(handle, int)
        gpu = self.gpus[handle]
        if name in gpu.failing:
            raise RuntimeError(f"NVML: {name} not supported")
        return gpu

    def name(self, handle: object) -> str:
        return self._field(handle, "name").name

    def uuid(self, handle: object) -> str:
        return self._field(handle, "uuid").uuid

    def memory(self, handle: object) -> MemoryInfo:
        gpu = self._field(handle, "memory")
        return MemoryInfo(total=gpu.total, free=gpu.total - gpu.used, used=gpu.used)

    def utilization_pct(self, handle: object) -> float:
        return self._field(handle, "utilization").util

    def compute_capability(self, handle: object) -> tuple[int, int]:
        return self._field(handle, "compute_capability").cc

    def temperature_c(self, handle: object) -> float:
        return self._field(handle, "temperature").temp

    def power_w(self, handle: object) -> float:
        return self._field(handle, "power").power

    def compute_processes(self, handle: object) -> Sequence[tuple[int, int | None]]:
        return self._field(handle, "processes").processes


def rtx3090(**overrides: object) -> FakeGpu:
    gpu = FakeGpu("NVIDIA GeForce RTX 3090", "GPU-3090", 24 * GIB, 2 * GIB, (8, 6))
    return _with(gpu, overrides)


def rtx4060ti(**overrides: object) -> FakeGpu:
    gpu = FakeGpu("NVIDIA GeForce RTX 4060 Ti", "GPU-4060", 16 * GIB, 512 * MIB, (8, 9))
    return _with(gpu, overrides)


def _with(gpu: FakeGpu, overrides: dict[str, object]) -> FakeGpu:
    for key, value in overrides.items():
        setattr(gpu, key, value)
    return gpu
