"""``x-examples`` of the OpenAPI document, built from model instances (valid by construction)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel

from app.api.openai.stream import ChunkRenderer
from app.api.openai.wire import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    OpenAIChatMessage,
    Usage,
)
from app.api.sse import frame
from app.api.wire import DrainAccepted
from app.orchestrator.contracts import (
    AdmissionResponse,
    Capabilities,
    DrainRequest,
    EndPayload,
    EngineCapability,
    ErrorEnvelope,
    FinishReason,
    MetricsPayload,
    Priority,
    RateLimits,
    ReloadRequest,
    ReloadResult,
    SessionBudgets,
    SessionInfo,
    StartedPayload,
    TaskRequest,
    TaskView,
    TokenPayload,
)

TASK_ID = uuid.UUID("7f0c2c1e-5b7a-4d55-9a38-2b1f3c4d5e6f")
CORRELATION_ID = "c0ffee00-1234-4abc-8def-0123456789ab"
Example = dict[str, Any]


def _json(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_defaults=False)


def enqueue() -> Example:
    """Return the enqueue request and its 202 answer."""
    req = TaskRequest(
        task_id=TASK_ID, session_id="chat-1", prompt="Write a haiku about GPUs",
        max_tokens=32, seed=7, priority=Priority.INTERACTIVE,
    )  # fmt: skip
    adm = AdmissionResponse(
        task_id=TASK_ID, queue_position=0, predicted_start_ms=0, pool_id="gpu0",
        session_id="chat-1",
    )  # fmt: skip
    return {
        "request": req.model_dump(mode="json", exclude_defaults=True),
        "response": {"status": 202, "body": _json(adm)},
    }


def task_view() -> Example:
    """Return a finished task's view."""
    view = TaskView(
        task_id=str(TASK_ID), state="done", priority=Priority.INTERACTIVE, pool_id="gpu0",
        session_id="chat-1", identity="localhost", correlation_id=CORRELATION_ID,
        created_at=1_700_000_000.0, queue_position=None, queued_ms=3, ttft_ms=41,
        decode_time_ms=620, tokens_in=6, tokens_out=32, finish_reason=FinishReason.LENGTH,
        error=None, decision_summary="gpu0 selected: ready, 1 free slot, shortest predicted end",
        artifact_id="3f5a" * 16,
    )  # fmt: skip
    return {"response": {"status": 200, "body": _json(view)}}


def stream() -> Example:
    """Return a complete stream's frames, and the frames of a canceled and a failed one."""
    started = StartedPayload(
        queue_position=0, predicted_start_ms=0, pool_id="gpu0", correlation_id=CORRELATION_ID
    )
    metrics = MetricsPayload(
        queue_depth=0, on_time_probability=0.97, kv_warmth=False,
        tokens_budget_remaining=None, time_budget_remaining_ms=None, cost_budget_remaining=None,
    )  # fmt: skip
    end = EndPayload(tokens_out=3, decode_time_ms=58, decode_ms=58, finish_reason="length")
    frames = [
        frame("started", _json(started)),
        frame("token", _json(TokenPayload(t="Silent", i=0))),
        frame("token", _json(TokenPayload(t=" fans", i=1))),
        frame("metrics", _json(metrics)),
        frame("token", _json(TokenPayload(t=" hum", i=2))),
        frame("end", _json(end)),
    ]
    canceled = EndPayload(tokens_out=1, decode_time_ms=9, decode_ms=9, finish_reason="canceled")
    failed = {
        "code": "WORKER_RESET", "message": "engine process exited mid-stream",
        "engine": "llamacpp", "pool_id": "gpu0", "retriable": True, "retry_after_ms": 1000,
    }  # fmt: skip
    return {
        "curl": "curl -N http://127.0.0.1:8080/v1/tasks/{task_id}/stream",
        "frames": b"".join(frames).decode(),
        "canceled": frame("end", _json(canceled)).decode(),
        "error": frame("error", failed).decode(),
        "heartbeat": ": keep-alive\n\n",
    }


def cancel() -> Example:
    """Return the cancel call and its answer."""
    return {
        "curl": "curl -X POST http://127.0.0.1:8080/v1/tasks/{task_id}/cancel",
        "response": {"status": 204},
        "stream_tail": frame(
            "end",
            _json(EndPayload(tokens_out=5, decode_time_ms=80, decode_ms=80,
                             finish_reason="canceled")),
        ).decode(),
    }  # fmt: skip


def session() -> Example:
    """Return a session's info."""
    info = SessionInfo(
        session_id="chat-1", ttl_ms_remaining=582_000, turns=2, kv_bytes=0, kv_warmth=True,
        last_pool_id="gpu0", budgets=SessionBudgets(tokens_remaining=9_800),
    )  # fmt: skip
    return {"response": {"status": 200, "body": _json(info)}}


def session_delete() -> Example:
    """Return the session delete call and its answer."""
    return {
        "curl": "curl -X DELETE http://127.0.0.1:8080/v1/sessions/chat-1",
        "response": {"status": 204},
    }


def capabilities() -> Example:
    """Return a capabilities answer."""
    caps = Capabilities(
        engines=[
            EngineCapability(
                engine="llamacpp", engine_version="b4500", ctx_max=8192,
                supported_workloads=["completion"], max_tokens_out=8192,
                workloads=["completion"], concurrency=2,
            )
        ],
        rate_limits=RateLimits(queue_capacity=16, full_policy="reject"),
        features={
            "placement_overrides": True, "cancel_on_disconnect": True, "heartbeat": False,
            "micro_batch": False, "auth_required": False,
        },
    )  # fmt: skip
    return {"response": {"status": 200, "body": _json(caps)}}


def drain() -> Example:
    """Return a drain request and its 202 answer."""
    accepted = DrainAccepted(pool_id="gpu0", draining=True, deadline_ms=30_000)
    return {
        "request": _json(DrainRequest(deadline_ms=30_000)),
        "response": {"status": 202, "body": _json(accepted)},
    }


def reload() -> Example:
    """Return a reload request with a success and a rolled-back answer."""
    ok = ReloadResult(
        pool_id="gpu0",
        ok=True,
        model="file:/models/qwen2.5-7b-q4.gguf",
        message="now serving file:/models/qwen2.5-7b-q4.gguf",
    )
    failed = ErrorEnvelope(
        code="RELOAD_FAILED", pool_id="gpu0", retriable=False,
        message="cannot load model 'file:/models/missing.gguf'; "
        "still serving file:/models/llama-3.1-8b-q4.gguf",
    )  # fmt: skip
    return {
        "request": _json(ReloadRequest(model_ref="file:/models/qwen2.5-7b-q4.gguf")),
        "response": {"status": 200, "body": _json(ok)},
        "rolled_back": {"status": 409, "body": _json(failed)},
    }


# ---- OpenAI-compatible routes --------------------------------------------------------

_CHAT_ID = f"chatcmpl-{TASK_ID}"
_CREATED = 1_700_000_000


def models() -> Example:
    """Return a model list answer."""
    card = ModelCard(
        id="qwen2.5-7b-q4", object="model", created=_CREATED, owned_by="llama-orch",
        pools=["gpu0", "gpu1"], context_length=8192,
        capabilities={"json_schema": True, "tools": True, "logprobs": True},
    )  # fmt: skip
    return {
        "curl": "curl http://127.0.0.1:8080/v1/models",
        "response": {"status": 200, "body": _json(ModelList(object="list", data=[card]))},
    }


def chat_completion() -> Example:
    """Return a chat request, its whole answer and its streamed chunks."""
    req = ChatCompletionRequest(
        model="qwen2.5-7b-q4", max_tokens=32, seed=7,
        messages=[OpenAIChatMessage(role="user", content="Write a haiku about GPUs")],
    )  # fmt: skip
    whole = ChatCompletion(
        id=_CHAT_ID, object="chat.completion", created=_CREATED, model="qwen2.5-7b-q4",
        system_fingerprint=None,
        choices=[ChatChoice(
            index=0, message=AssistantMessage(role="assistant", content="Silent fans hum"),
            logprobs=None, finish_reason="stop",
        )],
        usage=Usage(prompt_tokens=9, completion_tokens=3, total_tokens=12),
    )  # fmt: skip
    chunks = ChunkRenderer(
        chat=True, completion_id=_CHAT_ID, created=_CREATED, model="qwen2.5-7b-q4",
        include_usage=False,
    )  # fmt: skip
    frames = chunks.start() + chunks.token("Silent") + chunks.token(" fans hum")
    return {
        "curl": "curl -N http://127.0.0.1:8080/v1/chat/completions "
        "-H 'Content-Type: application/json' -d '<request>'",
        "request": req.model_dump(mode="json", exclude_none=True),
        "response": {"status": 200, "body": _json(whole)},
        "stream_frames": (frames + chunks.finish("stop", 9, 3)).decode(),
        "stream_error": chunks.error("engine process exited mid-stream", "WORKER_RESET").decode(),
    }


def completion() -> Example:
    """Return a text completion request and its answer."""
    req = CompletionRequest(model="gpu0", prompt="The capital of France is", max_tokens=4)
    whole = Completion(
        id=f"cmpl-{TASK_ID}", object="text_completion", created=_CREATED, model="qwen2.5-7b-q4",
        choices=[CompletionChoice(index=0, text=" Paris.", logprobs=None, finish_reason="stop")],
        usage=Usage(prompt_tokens=6, completion_tokens=2, total_tokens=8),
    )  # fmt: skip
    return {
        "request": req.model_dump(mode="json", exclude_none=True),
        "response": {"status": 200, "body": _json(whole)},
    }
