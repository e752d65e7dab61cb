"""Wire contracts of the OrchQueue v1 data and control planes.

These pydantic models are the single source of the JSON shapes that clients see
(and of the OpenAPI schemas). They are validated once at the edge (request
parsing); the per-token path never builds them (see ``events.py``).
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.orchestrator.lifecycle import PoolState, TaskState

API_VERSION = "1.0.0"

PoolId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
ShortStr = Annotated[str, Field(max_length=256)]


class Strict(BaseModel):
    """Base for wire models: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Priority(StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


class Workload(StrEnum):
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    RERANK = "rerank"


class Determinism(StrEnum):
    STRICT = "strict"
    BEST_EFFORT = "best_effort"


class KvHint(StrEnum):
    REUSE = "reuse"
    COLD = "cold"


class PlacementMode(StrEnum):
    PIN = "pin"
    PREFER = "prefer"
    AUTO = "auto"


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CANCELED = "canceled"


class ErrorCode(StrEnum):
    ADMISSION_REJECT = "ADMISSION_REJECT"
    QUEUE_FULL_DROP_LRU = "QUEUE_FULL_DROP_LRU"
    INVALID_PARAMS = "INVALID_PARAMS"
    POOL_UNREADY = "POOL_UNREADY"
    POOL_UNAVAILABLE = "POOL_UNAVAILABLE"
    REPLICA_EXHAUSTED = "REPLICA_EXHAUSTED"
    DECODE_TIMEOUT = "DECODE_TIMEOUT"
    WORKER_RESET = "WORKER_RESET"
    INTERNAL = "INTERNAL"
    DEADLINE_UNMET = "DEADLINE_UNMET"


class PlacementOverrides(Strict):
    """User overrides of the placement policy."""

    mode: PlacementMode = PlacementMode.AUTO
    pin_pool_id: PoolId | None = None
    prefer_pools: list[PoolId] = Field(default_factory=list, max_length=64)
    avoid_pools: list[PoolId] = Field(default_factory=list, max_length=64)
    require_device_mask: Annotated[str, Field(max_length=64)] | None = None
    allow_fallback: bool = True

    @model_validator(mode="after")
    def _pin_needs_pool(self) -> PlacementOverrides:
        if self.mode is PlacementMode.PIN and not self.pin_pool_id:
            raise ValueError("placement.mode 'pin' needs placement.pin_pool_id")
        if self.mode is PlacementMode.PREFER and not self.prefer_pools:
            raise ValueError("placement.mode 'prefer' needs a non-empty placement.prefer_pools")
        return self


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=200_000)]


class TaskRequest(Strict):
    """A task submitted with ``POST /v1/tasks``."""

    task_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    session_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    workload: Workload = Workload.COMPLETION
    model_ref: ShortStr | None = None
    engine: Literal["llamacpp", "openai", "mock"] | None = None
    ctx: Annotated[int, Field(ge=1, le=1_048_576)] | None = None
    priority: Priority = Priority.INTERACTIVE
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    determinism: Determinism = Determinism.BEST_EFFORT
    sampler_profile_version: Annotated[str, Field(max_length=32)] | None = None
    prompt: Annotated[str, Field(max_length=1_000_000)] | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1, max_length=256)
    max_tokens: Annotated[int, Field(ge=1, le=131_072)] = 256
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.8
    stop: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=8)
    deadline_ms: Annotated[int, Field(ge=1, le=86_400_000)] | None = Field(
        default=None,
        description="Milliseconds from admission by which the task must end. Refused at "
        "admission with 400 DEADLINE_UNMET when the pool's measured speed predicts a miss; "
        "when it passes while the task is queued or running, the stream ends with an "
        "`error` event DEADLINE_UNMET (not retriable).",
    )
    expected_tokens: Annotated[int, Field(ge=1, le=131_072)] | None = None
    kv_hint: KvHint | None = None
    placement: PlacementOverrides = Field(default_factory=PlacementOverrides)

    @model_validator(mode="after")
    def _prompt_xor_messages(self) -> TaskRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self


class AdmissionResponse(Strict):
    task_id: uuid.UUID
    queue_position: int
    predicted_start_ms: int
    backoff_ms: int = 0
    pool_id: str
    session_id: str | None = None


# ---- SSE payloads (schemas only; the hot path writes them with json.dumps) ----


class StartedPayload(Strict):
    queue_position: int
    predicted_start_ms: int
    pool_id: str
    correlation_id: str


class TokenPayload(Strict):
    t: str
    i: int


class MetricsPayload(Strict):
    queue_depth: int
    on_time_probability: float | None
    kv_warmth: bool
    tokens_budget_remaining: int | None
    time_budget_remaining_ms: int | None
    cost_budget_remaining: float | None


class EndPayload(Strict):
    tokens_out: int
    decode_time_ms: int
    decode_ms: int = Field(description="Deprecated alias of decode_time_ms, sent for one release.")
    finish_reason: FinishReason


class ErrorPayload(Strict):
    code: ErrorCode
    message: str
    engine: str | None = None
    pool_id: str | None = None
    retriable: bool = False
    retry_after_ms: int | None = None


class ErrorEnvelope(Strict):
    """The body of every non-2xx OrchQueue response."""

    code: str
    message: str
    engine: str | None = None
    pool_id: str | None = None
    retriable: bool | None = None
    retry_after_ms: int | None = None
    policy_label: str | None = None


# ---- Control plane ----


class EngineCapability(Strict):
    engine: str
    engine_version: str
    ctx_max: int
    workloads: list[Workload]
    concurrency: int


class RateLimits(Strict):
    queue_capacity: int
    full_policy: str


class Capabilities(Strict):
    api_version: str = API_VERSION
    engines: list[EngineCapability]
    rate_limits: RateLimits
    features: dict[str, bool]


class SessionBudgets(Strict):
    tokens_remaining: int | None = None
    time_remaining_ms: int | None = None
    cost_remaining: float | None = None


class SessionInfo(Strict):
    session_id: str
    ttl_ms_remaining: int
    turns: int
    kv_bytes: int
    kv_warmth: bool
    kv_migrated: bool = False
    last_pool_id: str | None = None
    budgets: SessionBudgets


def dump(model: BaseModel) -> dict[str, Any]:
    """Return ``model`` as a JSON-ready dict (enums as values, UUIDs as str)."""
    return model.model_dump(mode="json")


# ---- Views returned by the facade (and the control plane) ----


class TaskView(Strict):
    task_id: str
    state: TaskState
    priority: Priority
    pool_id: str | None
    session_id: str | None
    identity: str
    correlation_id: str
    created_at: float
    queue_position: int | None
    queued_ms: int | None
    ttft_ms: int | None
    decode_time_ms: int | None
    tokens_in: int
    tokens_out: int
    finish_reason: FinishReason | None
    error: ErrorPayload | None
    decision_summary: str
    api: str = "orchqueue"
    prompt_start: str = Field(
        default="", description="The first words of the prompt (or last user message)"
    )


class QueueDepth(Strict):
    interactive: int
    batch: int


class PoolView(Strict):
    pool_id: str
    engine: str
    engine_version: str
    model: str
    ctx: int
    device_mask: str
    demo: bool
    state: PoolState
    detail: str
    live: bool
    ready: bool
    draining: bool
    slots_total: int
    slots_busy: int
    queue: QueueDepth
    vram_total_bytes: int | None
    vram_free_bytes: int | None
    gpu_utilization: float | None
    perf_tokens_per_s: float | None
    first_token_ms: float | None
    crashes_recent: int


CandidateOutcome = Literal["selected", "outranked", "filtered", "refused"]
DecisionOutcome = Literal["admitted", "refused"]


class CandidateRecord(Strict):
    """One pool of a placement decision and why it won, lost or was left out."""

    pool_id: str
    outcome: CandidateOutcome = Field(
        description="selected (placement chose it and its queue took the task), outranked, "
        "filtered, or refused (placement chose it but its queue or the deadline refused)"
    )
    reason: str = Field(description="Human explanation; read the fields, not this text")
    filter: str | None = Field(
        default=None, description="The feasibility filter that dropped this pool (filtered)"
    )
    predicted_end_ms: float | None = None
    rank_key: str | None = Field(
        default=None,
        description="The ranking key this pool lost on (outranked), or the key that decided "
        "for it (selected / refused); null for a filtered pool or an only candidate",
    )
    rank: int | None = Field(
        default=None, description="Position in the ranking, 0 = best; null when filtered"
    )


class DecisionRecord(Strict):
    """One placement decision and what admission made of it."""

    at: float
    task_id: str
    priority: Priority
    mode: PlacementMode
    outcome: DecisionOutcome = Field(
        description="admitted (queued on pool_id) or refused (see refusal_code / refusal_reason)"
    )
    pool_id: str | None = Field(description="The pool the task was queued on; null when refused")
    refusal_code: str | None = Field(
        default=None, description="The error code the client got (e.g. ADMISSION_REJECT on 429)"
    )
    refusal_reason: str | None = Field(
        default=None,
        description="Why it was refused: queue_full, deadline_unmet, or a no-capacity reason",
    )
    selected_pool_id: str | None = Field(
        description="The pool placement ranked first (its queue may still have refused)"
    )
    no_capacity_reason: str | None
    deciding_key: str | None = Field(
        default=None, description="The ranking key that separated the winner from the runner-up"
    )
    candidates_considered: int
    filters_applied: list[str]
    tie_breakers_applied: list[str]
    pinned: bool
    fallback_used: bool
    summary: str
    candidates: list[CandidateRecord]


class DrainRequest(Strict):
    deadline_ms: Annotated[int, Field(ge=0, le=3_600_000)] = 30_000


class ReloadRequest(Strict):
    """POST /v1/pools/{id}/reload: ``model_ref`` (or the upstream name ``new_model_ref``)
    and ``persist`` (write the choice to the config file so it survives a restart)."""

    model_ref: Annotated[str, Field(min_length=1, max_length=4096)]
    persist: bool = False

    @model_validator(mode="before")
    @classmethod
    def _upstream_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "new_model_ref" in data:
            data = dict(data)
            alias = data.pop("new_model_ref")
            data.setdefault("model_ref", alias)
        return data


class ReloadResult(Strict):
    pool_id: str
    ok: bool
    model: str
    message: str
