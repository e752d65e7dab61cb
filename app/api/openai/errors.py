"""Errors of the OpenAI-compatible endpoints, in OpenAI's shape.

Statuses and headers come from the API's one mapper (``errors.error_response``);
this module only reshapes its body into ``{"error": {"message", "type", "code",
"param"}}``, with the OrchQueue code in lower case (a full queue is
``admission_reject``; an unknown model is ``model_not_found``). A middleware
applies it to the OpenAI paths (auth and Host/Origin refusals included), so
every other route keeps the OrchQueue envelope.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from app.api.errors import ApiError, error_response
from app.api.render import dict_response
from app.api.state import CORRELATION_ID
from app.orchestrator.contracts import ErrorCode
from app.orchestrator.errors import OrchError, Unsupported
from app.orchestrator.events import ErrorData

OPENAI_PREFIXES = ("/v1/chat/completions", "/v1/completions", "/v1/models")
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
_DROPPED_HEADERS = frozenset({hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH})
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


class ParamError(ApiError):
    """A refusal about one request field (``param`` names it)."""

    def __init__(self, status: int, code: str, message: str, param: str) -> None:
        super().__init__(status, code, message)
        self.param = param


def model_not_found(model: str) -> ParamError:
    """Return the 404 for a ``model`` that no pool serves."""
    return ParamError(
        404,
        "model_not_found",
        f"model '{model}' is not served here; GET /v1/models lists the model ids "
        "(a pool id from GET /v1/pools works too)",
        "model",
    )


def error_type(status: int) -> str:
    """Return OpenAI's error ``type`` for an HTTP status."""
    if status >= 500:
        return "server_error"
    return _TYPES.get(status, "invalid_request_error")


def error_body(message: str, status: int, code: str | None, param: str | None = None) -> Any:
    """Return ``{"error": {...}}`` for a refusal with ``status``."""
    return {
        "error": {
            "message": message,
            "type": error_type(status),
            "code": code.lower() if code else None,
            "param": param,
        }
    }


def openai_error_response(exc: BaseException, correlation_id: str = "") -> web.Response:
    """Return the OpenAI-shaped response for ``exc`` (never raises, never blocks).

    The status and headers (Retry-After, X-Backoff-Ms, WWW-Authenticate, Allow)
    are those the OrchQueue mapper gives ``exc``.
    """
    base = error_response(exc, correlation_id)
    envelope = _envelope(base)
    message = str(envelope.get("message") or base.reason)
    if envelope.get("hint"):
        message = f"{message}; {envelope['hint']}"
    body = error_body(message, base.status, envelope.get("code"), _param(exc))
    headers = {k: v for k, v in base.headers.items() if k not in _DROPPED_HEADERS}
    return dict_response(body, status=base.status, headers=headers)


def _envelope(response: web.Response) -> dict[str, Any]:
    try:
        data = json.loads(response.text or "{}")
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _param(exc: BaseException) -> str | None:
    if isinstance(exc, ParamError | Unsupported):
        return exc.param
    if isinstance(exc, ValidationError) and exc.error_count():
        loc = exc.errors(include_url=False, include_input=False)[0]["loc"]
        return ".".join(str(p) for p in loc if not _is_union_tag(p)) or None
    return None


def _is_union_tag(part: int | str) -> bool:
    """Return True for the union-member labels pydantic puts in an error's loc."""
    if isinstance(part, int):
        return False
    return (
        "[" in part or part in _TYPE_TAGS or part[:1].isupper() or part.startswith("constrained-")
    )


def event_error(data: ErrorData) -> OrchError:
    """Return the refusal matching a task's ``error`` event (for non-streamed answers).

    A task dropped from a full queue is a 429, one the engine refused as invalid
    a 400; other retriable failures are 503; the rest 500.
    The mapper adds Retry-After where it applies.
    """
    code = data["code"] or ErrorCode.INTERNAL
    retriable = data["retriable"]
    retry_ms = data["retry_after_ms"] if retriable else None
    status = 503 if retriable else 500
    if code == ErrorCode.QUEUE_FULL_DROP_LRU:
        status = 429
    elif code == ErrorCode.INVALID_PARAMS:
        status = 400  # the engine refused the request (e.g. a template that cannot do tools)
    message = data["message"] or "the task failed"
    return OrchError(
        code,
        message,
        status=status,
        pool_id=data["pool_id"],
        engine=data["engine"],
        retriable=retriable,
        retry_after_ms=retry_ms,
    )


def canceled_error() -> OrchError:
    """Return the refusal of a task canceled on the server (operator cancel or drain)."""
    return OrchError(
        "CANCELED",
        "the task was canceled on the server (a cancel request or a pool drain) "
        "before it finished; send the request again",
        status=503,
        retriable=True,
        retry_after_ms=1000,
    )


def is_openai_path(path: str) -> bool:
    """Return True for the paths whose errors take OpenAI's shape."""
    return path.startswith(OPENAI_PREFIXES)


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer refusals on the OpenAI paths in OpenAI's shape; other paths pass through."""
    if not is_openai_path(request.path):
        return await handler(request)
    try:
        return await handler(request)
    except Exception as exc:
        return openai_error_response(exc, request.get(CORRELATION_ID, ""))
