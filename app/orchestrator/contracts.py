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


EngineName = Literal["llamacpp", "vllm", "tgi", "triton", "openai", "mock"]
"""Engines a request may name: upstream's four plus our ``openai`` and ``mock`` pools."""
UPSTREAM_ENGINES = ("llamacpp", "vllm", "tgi", "triton")
PROMPT_FORMS = ("prompt", "messages", "inputs")
MAX_TOKENS_OUT = 131_072


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
    TOOL_CALLS = "tool_calls"
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


ToolName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
JsonObject = dict[str, Any]


class ToolFunction(Strict):
    """A function the model may call: its name, what it does, its JSON-schema parameters."""

    name: ToolName
    description: Annotated[str, Field(max_length=4096)] | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: ToolFunction


class ToolCallFunction(Strict):
    name: ToolName
    arguments: Annotated[str, Field(max_length=200_000)]


class ToolCall(Strict):
    """A call an assistant message made (sent back in the conversation)."""

    id: Annotated[str, Field(min_length=1, max_length=128)]
    type: Literal["function"] = "function"
    function: ToolCallFunction


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: dict[Literal["name"], ToolName]


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaFormat(Strict):
    """``response_format.json_schema``: the schema the answer must validate against."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: Annotated[str, Field(max_length=4096)] | None = None
    schema_: JsonObject = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    """``{"type": "text" | "json_object"}`` or ``{"type": "json_schema", "json_schema": ...}``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_asked(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError(
                "response_format.json_schema is required with type 'json_schema' "
                "and not allowed with the other types"
            )
        return self


class ChatMessage(Strict):
    """A message; assistant ones may carry ``tool_calls``, ``tool`` ones answer a call."""

    role: Literal["system", "user", "assistant", "tool"]
    content: Annotated[str, Field(max_length=200_000)]
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=128)
    tool_call_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("tool_call_id is required on 'tool' messages and only there")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls is only allowed on 'assistant' messages")
        return self


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
TokenKey = Annotated[str, Field(min_length=1, max_length=64)]
LogitBias = Annotated[
    dict[TokenKey, Annotated[float, Field(ge=-100, le=100)]], Field(max_length=1024)
]


class Sampling(Strict):
    """The optional sampling and output fields a task passes to its engine untouched.

    Each is OpenAI's (or llama-server's) parameter of the same name; a field left
    out keeps the engine's default. ``response_format`` and ``tools`` also steer
    placement: only pools whose engine can honour them are candidates.
    """

    top_p: Probability | None = None
    top_k: Annotated[int, Field(ge=0, le=100_000)] | None = None
    min_p: Probability | None = None
    repeat_penalty: Annotated[float, Field(ge=0.0, le=10.0)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _dependent_fields(self) -> Sampling:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.tool_choice not in (None, "none") and not self.tools:
            raise ValueError("tool_choice needs a non-empty tools list")
        return self

    def needs(self) -> frozenset[str]:
        """Return the engine features this request needs (see ``ENGINE_FEATURES``)."""
        out: set[str] = set()
        if self.response_format is not None and self.response_format.type != "text":
            out.add(JSON_SCHEMA)
        if self.tools:
            out.add(TOOLS)
        if self.logprobs:
            out.add(LOGPROBS)
        return frozenset(out)

    def engine_fields(self) -> dict[str, Any]:
        """Return the fields that were set, as the engine's request body spells them."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


JSON_SCHEMA = "json_schema"
TOOLS = "tools"
LOGPROBS = "logprobs"
ENGINE_FEATURES = (JSON_SCHEMA, TOOLS, LOGPROBS)
"""What an engine may or may not do beyond plain decoding (``PoolDescriptor.features``)."""
FEATURE_FIELDS = {JSON_SCHEMA: "response_format", TOOLS: "tools", LOGPROBS: "logprobs"}
"""The request field that asks for each feature (named in refusals)."""


class TaskRequest(Strict):
    """A task submitted with ``POST /v1/tasks``."""

    task_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    session_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    workload: Workload = Workload.COMPLETION
    model_ref: ShortStr | None = None
    engine: EngineName | None = Field(
        default=None,
        description="Only pools of this engine; an engine no pool runs is answered 503 "
        "POOL_UNAVAILABLE (placement found no pool), not 400.",
    )
    ctx: Annotated[int, Field(ge=1, le=1_048_576)] | None = None
    priority: Priority = Priority.INTERACTIVE
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    determinism: Determinism = Determinism.BEST_EFFORT
    sampler_profile_version: Annotated[str, Field(max_length=32)] | None = None
    prompt: Annotated[str, Field(max_length=1_000_000)] | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1, max_length=256)
    inputs: list[Annotated[str, Field(max_length=1_000_000)]] | None = Field(
        default=None,
        max_length=256,
        description="Upstream's prompt form: the strings joined by newlines are the prompt.",
    )
    output_mode: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="Accepted and ignored, as the upstream contract requires."
    )
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS_OUT)] = 256
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
    sampling: Sampling | None = Field(
        default=None,
        description="Optional engine sampling and output fields (top_p, top_k, min_p, "
        "penalties, logit_bias, logprobs, response_format, tools); omitted ones keep the "
        "engine's defaults.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_prompt_form(cls, data: Any) -> Any:
        """Turn ``inputs`` into ``prompt``; no prompt at all is the empty prompt."""
        if not isinstance(data, dict):
            return data
        given = [k for k in PROMPT_FORMS if data.get(k) is not None]
        if len(given) > 1:
            raise ValueError("give only one of 'prompt', 'messages' or 'inputs'")
        if not given:
            return data | {"prompt": ""}
        inputs = data.get("inputs")
        if isinstance(inputs, list) and all(isinstance(i, str) for i in inputs):
            return data | {"prompt": "\n".join(inputs)}
        return data

    @model_validator(mode="after")
    def _chat_only_sampling(self) -> TaskRequest:
        if self.prompt is not None and self.sampling is not None:
            chat_only = [f for f in ("response_format", "tools", "tool_choice")
                         if getattr(self.sampling, f) is not None]  # fmt: skip
            if chat_only:
                raise ValueError(f"sampling.{chat_only[0]} needs 'messages', not 'prompt'")
        return self

    def needs(self) -> frozenset[str]:
        """Return the engine features this task needs (``ENGINE_FEATURES``)."""
        return self.sampling.needs() if self.sampling is not None else frozenset()


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
    x: dict[str, Any] | None = Field(
        default=None,
        description="Only on a token that carries the engine's tool-call fragments "
        "(`tool_calls`) and/or `logprobs`, in OpenAI's chunk shapes; absent otherwise",
    )


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
    supported_workloads: list[Workload]
    max_tokens_out: int = Field(description="The most tokens one task may ask for (max_tokens)")
    workloads: list[Workload] = Field(
        description="Deprecated alias of supported_workloads, sent for one release.",
        json_schema_extra={"deprecated": True},
    )
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


def _unset(value: object) -> bool:
    return value is None


class SessionInfo(Strict):
    session_id: str
    ttl_ms_remaining: int
    turns: int
    kv_bytes: int
    kv_warmth: bool
    kv_migrated: bool = False
    last_pool_id: str | None = None
    budgets: SessionBudgets
    tokens_budget_remaining: int | None = Field(
        default=None,
        exclude_if=_unset,
        description="Upstream's name for budgets.tokens_remaining (absent when unlimited)",
    )
    time_budget_remaining_ms: int | None = Field(
        default=None,
        exclude_if=_unset,
        description="Upstream's name for budgets.time_remaining_ms (absent when unlimited)",
    )
    cost_budget_remaining: float | None = Field(
        default=None,
        exclude_if=_unset,
        description="Upstream's name for budgets.cost_remaining (absent when unlimited)",
    )


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
    artifact_id: str | None = Field(
        default=None,
        description="The trace artifact of the finished task's stream (its SSE transcript "
        "and placement decision; GET /v1/artifacts/{id}); set shortly after the stream ends",
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
    features: list[str] = Field(
        default_factory=list,
        description="What the engine can do beyond plain decoding: json_schema "
        "(response_format), tools, logprobs",
    )


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
    vram_need_bytes: int | None = Field(
        default=None, description="VRAM the pool needed free (filtered by vram); else null"
    )
    vram_free_bytes: int | None = Field(
        default=None, description="VRAM free on the pool's GPUs then (filtered by vram); else null"
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
        description="Why it was refused: queue_full, deadline_unmet, a no-capacity reason, "
        "or the limit that refused it before placement (ctx, turns, a session budget)",
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
    prompt_start: str = Field(
        default="", description="The first words of the prompt (or last user message)"
    )


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
