"""The ports through which the core acts on the world.

Adapters in ``app.engine_host`` implement these protocols; tests pass recording
fakes through the same constructors. Nothing here does I/O by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from app.orchestrator.contracts import ChatMessage, ErrorCode
from app.orchestrator.lifecycle import PoolState


@dataclass(frozen=True, slots=True)
class PoolDescriptor:
    """What a pool serves. Immutable; a reload publishes a new one."""

    pool_id: str
    engine: str
    engine_version: str
    model: str
    ctx: int
    slots: int
    device_mask: str
    demo: bool = False
    compute_capability: str | None = None
    vram_estimate_bytes: int = 0
    """VRAM the model needs on the pool's GPUs (weights + KV + margin); 0 = unknown."""
    features: frozenset[str] = frozenset()
    """What the engine can do beyond plain decoding (``contracts.ENGINE_FEATURES``)."""


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """A timestamped snapshot of a pool's health as its owner sees it."""

    state: PoolState
    detail: str = ""
    vram_total_bytes: int | None = None
    vram_free_bytes: int | None = None
    gpu_utilization: float | None = None
    crashes_recent: int = 0
    crashes_total: int = 0
    restarts_total: int = 0
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """One decode request handed to an engine."""

    prompt: str | None
    messages: Sequence[ChatMessage] | None
    max_tokens: int
    temperature: float
    seed: int | None
    stop: Sequence[str] = ()
    correlation_id: str = ""
    session_id: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    """Further OpenAI body fields (``Sampling.engine_fields``), sent to the engine as they are."""


class Delta(str):
    """A token text that carries more: ``extra`` holds the engine chunk's ``tool_calls``
    and/or ``logprobs`` as the engine sent them (OpenAI's shapes). Plain tokens are str."""

    extra: Mapping[str, Any]

    def __new__(cls, text: str, extra: Mapping[str, Any]) -> Delta:
        self = super().__new__(cls, text)
        self.extra = extra
        return self


@runtime_checkable
class EngineLog(Protocol):
    """An engine whose process writes a log file (llama-server's output)."""

    @property
    def log_path(self) -> Path: ...

    async def read_log(self, tail_lines: int) -> list[str]:
        """Return the last ``tail_lines`` lines of the engine's log (oldest first)."""
        ...


class EngineError(Exception):
    """Raised by an engine stream; ``code`` is one of the error taxonomy."""

    def __init__(self, code: ErrorCode, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retriable = retriable


@runtime_checkable
class EngineStream(Protocol):
    """An open decode: iterate token texts; ``aclose`` aborts the engine request.

    After exhaustion ``finish_reason`` is "stop" or "length" and
    ``prompt_tokens`` holds the engine's count when it reported one.
    Iteration raises ``EngineError``.
    """

    finish_reason: str | None
    prompt_tokens: int | None

    def __aiter__(self) -> EngineStream: ...

    async def __anext__(self) -> str: ...

    async def aclose(self) -> None: ...


PoolListener = Callable[[PoolStatus], None]


@runtime_checkable
class EngineControl(Protocol):
    """One pool's engine as the core drives it (one process, one model, one mask)."""

    @property
    def descriptor(self) -> PoolDescriptor: ...

    @property
    def status(self) -> PoolStatus: ...

    def add_listener(self, listener: PoolListener) -> None:
        """Call ``listener`` (on the loop) whenever ``status`` changes."""

    async def start(self) -> None:
        """Start the engine; returns once it is starting (readiness is reported)."""

    async def stop(self) -> None:
        """Stop the engine and wait for its process to exit."""

    async def open_stream(self, request: EngineRequest) -> EngineStream:
        """Send ``request``; returns once the engine accepted it. Raises EngineError."""

    async def reload(self, model_ref: str) -> str:
        """Swap to ``model_ref`` atomically; returns a message. Raises EngineError
        on failure, in which case the old model keeps serving."""

    async def restart(self) -> None:
        """Restart the engine process (user action or supervision)."""


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU in an inventory snapshot; a field that failed to read is None."""

    index: int
    uuid: str | None
    name: str | None
    vram_total_bytes: int | None
    vram_free_bytes: int | None
    vram_used_bytes: int | None
    utilization_pct: float | None
    compute_capability: str | None
    temperature_c: float | None
    power_w: float | None
    process_vram_bytes: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class GpuInventory:
    """An immutable, timestamped NVML snapshot. No GPU is a value: ``gpus == ()``."""

    gpus: tuple[GpuInfo, ...]
    at: float
    hint: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None  # the CUDA version the driver supports


class GpuProbe(Protocol):
    def snapshot(self) -> GpuInventory:
        """Return the latest inventory; never raises, never blocks on NVML."""


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""

    def time(self) -> float:
        """Seconds since the epoch (for timestamps shown to users)."""


class SystemClock:
    """The production clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()
