"""Wire models of the OpenAI-compatible endpoints, and their translation to a TaskRequest.

Request models take a short allow-list: an unknown field is refused with 400
naming it (``supported_fields``), except ``IGNORED_HINTS``, which are accepted
and dropped; ``null`` is accepted wherever a field is optional.
Response models document the shapes in the OpenAPI document and let tests
validate real answers; the handlers build plain dicts, and the per-token path
builds no model at all (see ``openai_stream.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.openai.errors import ParamError
from app.orchestrator.contracts import (
    LogitBias,
    Penalty,
    PlacementOverrides,
    Priority,
    Probability,
    ResponseFormat,
    Sampling,
    TaskRequest,
    Tool,
    ToolCall,
    ToolChoice,
)
from app.orchestrator.guardrails import estimate_prompt_tokens, prompt_chars

MAX_TOKENS_CAP = 131_072
DEFAULT_EXPECTED_TOKENS = 256
N_MESSAGE = "only n=1 is supported: this server returns one choice per request; omit n or send 1"

MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_CAP)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
StopText = Annotated[str, Field(max_length=64)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- requests ----------------------------------------------------------------------


IGNORED_HINTS = frozenset(
    {"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
)
"""Fields accepted and ignored: they only label or bill a request on OpenAI's side."""
UNSUPPORTED = "unsupported_parameter"


def supported_fields(data: Any, model: type[BaseModel]) -> Any:
    """Return ``data`` without the ignored hints; raises ParamError (400) naming the first
    field ``model`` does not declare. Non-objects pass through to fail validation. Pure."""
    if not isinstance(data, dict):
        return data
    for key in data:
        if key not in model.model_fields and key not in IGNORED_HINTS:
            raise ParamError(
                400,
                UNSUPPORTED,
                f"parameter '{key}' is not supported by this server; remove it "
                "(docs/API.md lists the supported and the ignored parameters)",
                str(key),
            )
    return {k: v for k, v in data.items() if k not in IGNORED_HINTS}


class OpenAITextPart(_Wire):
    """One text part of a message's content (other part types are not served)."""

    type: Literal["text"]
    text: str


class OpenAIChatMessage(_Wire):
    """A chat message; ``developer`` counts as ``system``, list content is joined."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[OpenAITextPart] | None = None
    name: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="Accepted and ignored"
    )
    tool_calls: list[ToolCall] | None = None
    tool_call_id: Annotated[str, Field(max_length=128)] | None = None

    def text(self) -> str:
        """Return the message's text (parts joined, None as "")."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def task_message(self) -> dict[str, Any]:
        """Return the TaskRequest message (a developer message becomes a system one)."""
        out: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text(),
        }
        if self.tool_calls is not None:
            out["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class OpenAIStreamOptions(_Wire):
    include_usage: bool | None = None


class _Common(_Wire):
    model: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="A model id from GET /v1/models, or a pool id from GET /v1/pools"
    )
    stream: bool | None = None
    stream_options: OpenAIStreamOptions | None = None
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    seed: Seed | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=8)] | None = None
    n: int | None = Field(default=None, description="Only 1 is supported")
    top_p: Probability | None = None
    top_k: Annotated[int, Field(ge=0, le=100_000)] | None = Field(
        default=None, description="llama-server's top_k (0 = off)"
    )
    min_p: Probability | None = Field(default=None, description="llama-server's min_p")
    repeat_penalty: Annotated[float, Field(ge=0.0, le=10.0)] | None = Field(
        default=None, description="llama-server's repeat_penalty (1.0 = off)"
    )
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    priority: Priority | None = Field(
        default=None, description="Non-standard: interactive (default) or batch"
    )
    placement: PlacementOverrides | None = Field(
        default=None, description="Non-standard: the OrchQueue placement overrides"
    )

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError(N_MESSAGE)
        return value

    @property
    def streaming(self) -> bool:
        """Return True for ``stream: true``."""
        return bool(self.stream)

    @property
    def include_usage(self) -> bool:
        """Return True when a streamed answer ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def limit(self) -> int | None:
        """Return the requested completion-token limit, None when absent."""
        return self.max_tokens

    def sampling(self) -> Sampling | None:
        """Return the engine fields that were sent, None when none was.

        Raises pydantic's ValidationError when they do not fit together."""
        fields = {k: v for k in Sampling.model_fields if (v := getattr(self, k, None)) is not None}
        return Sampling.model_validate(fields) if fields else None


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[OpenAIChatMessage], Field(min_length=1, max_length=256)]
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None

    def limit(self) -> int | None:
        """Return ``max_completion_tokens``, else ``max_tokens``, None when both are absent."""
        return self.max_completion_tokens or self.max_tokens

    def prompt_chars(self) -> int:
        """Return the character size of the messages (as the admission estimates it)."""
        return prompt_chars(None, (m.text() for m in self.messages))

    def task_fields(self) -> dict[str, Any]:
        """Return the TaskRequest ``messages``."""
        return {"messages": [m.task_message() for m in self.messages]}


class CompletionRequest(_Common):  # the chat-only fields are refused here
    """``POST /v1/completions``."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    def text(self) -> str:
        """Return the one prompt."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def prompt_chars(self) -> int:
        """Return the character size of the prompt (as the admission estimates it)."""
        return prompt_chars(self.text(), ())

    def task_fields(self) -> dict[str, Any]:
        """Return the TaskRequest ``prompt``."""
        return {"prompt": self.text()}


OpenAIRequest = ChatCompletionRequest | CompletionRequest


def default_max_tokens(ctx: int, prompt_chars: int) -> int:
    """Return the completion limit of a request that sets none: the context left. Pure."""
    return max(1, min(MAX_TOKENS_CAP, ctx - estimate_prompt_tokens(prompt_chars)))


def to_task_request(req: OpenAIRequest, model_ref: str, ctx: int) -> TaskRequest:
    """Return the OrchQueue task of ``req`` for ``model_ref`` (pools of context ``ctx``).

    Without a limit the task may use the context left, and placement assumes a
    typical answer length. Raises pydantic's ValidationError (fields named as in
    the OpenAI request). Pure.
    """
    limit = req.limit()
    data: dict[str, Any] = {
        **req.task_fields(),
        "model_ref": model_ref,
        "priority": req.priority or Priority.INTERACTIVE,
        "max_tokens": limit or default_max_tokens(ctx, req.prompt_chars()),
    }
    if limit is None:
        data["expected_tokens"] = min(DEFAULT_EXPECTED_TOKENS, data["max_tokens"])
    if req.temperature is not None:
        data["temperature"] = req.temperature
    if req.seed is not None:
        data["seed"] = req.seed
    if req.stop is not None:
        data["stop"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    if req.placement is not None:
        data["placement"] = req.placement
    sampling = req.sampling()
    if sampling is not None:
        data["sampling"] = sampling
    return TaskRequest.model_validate(data)


# ---- responses (documentation and tests; handlers build dicts) -----------------------


class OpenAIError(_Wire):
    message: str
    type: str
    code: str | None
    param: str | None


class OpenAIErrorBody(_Wire):
    """The body of every non-2xx answer of the OpenAI-compatible endpoints."""

    error: OpenAIError


class Usage(_Wire):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length", "tool_calls"]


class AssistantMessage(_Wire):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(_Wire):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None
    finish_reason: FinishReason


class ChatCompletion(_Wire):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[ChatChoice]
    usage: Usage


class ToolCallFragment(_Wire):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None


class ChunkDelta(_Wire):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallFragment] | None = None


class ChatChunkChoice(_Wire):
    index: int
    delta: ChunkDelta
    logprobs: dict[str, Any] | None
    finish_reason: FinishReason | None


class ChatCompletionChunk(_Wire):
    """One ``data:`` line of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(_Wire):
    index: int
    text: str
    logprobs: dict[str, Any] | None
    finish_reason: FinishReason | None


class Completion(_Wire):
    """A text completion, or (``finish_reason`` null, ``usage`` optional) one streamed chunk."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(_Wire):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    pools: list[str] = Field(description="The pools serving this model")
    context_length: int = Field(description="The largest context among those pools")
    capabilities: dict[str, bool] = Field(
        description="json_schema (response_format), tools, logprobs: whether a pool "
        "serving this model can honour it"
    )


class ModelList(_Wire):
    object: Literal["list"]
    data: list[ModelCard]
