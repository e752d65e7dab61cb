"""The one place that maps exceptions to HTTP statuses and JSON error bodies.

Every non-2xx answer of the OrchQueue API comes from ``error_response``: the
core's OrchError taxonomy, request validation, auth and browser checks, aiohttp's
own HTTP errors and, last, anything unexpected (500 with a generic message; the
traceback goes to the server log only).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from aiohttp import web
from pydantic import ValidationError

from app.api.render import dict_response, model_response
from app.orchestrator.contracts import ErrorCode, ErrorEnvelope
from app.orchestrator.errors import OrchError

log = logging.getLogger("llama_orch.api")

MAX_LISTED_PROBLEMS = 5


class ApiError(Exception):
    """A refusal decided by the HTTP layer (auth, Host/Origin, body size, query)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint
        self.headers = dict(headers or {})


def error_response(exc: BaseException, correlation_id: str = "") -> web.Response:
    """Return the response for ``exc`` (never raises, never blocks).

    OrchError -> its status and envelope (429 adds Retry-After and X-Backoff-Ms);
    ValidationError -> 400 INVALID_PARAMS naming the fields; ApiError -> its
    status; aiohttp HTTP errors -> their status as an envelope; anything else
    -> 500 INTERNAL, logged with its traceback.
    """
    if isinstance(exc, OrchError):
        return _orch_error(exc)
    if isinstance(exc, ValidationError):
        return envelope_response(400, ErrorCode.INVALID_PARAMS, describe_validation(exc))
    if isinstance(exc, ApiError):
        return _api_error(exc)
    if isinstance(exc, web.HTTPException):
        return _http_error(exc)
    log.error(
        "unhandled error while serving a request",
        exc_info=exc,
        extra={"fields": {"correlation_id": correlation_id}},
    )
    message = "internal server error; the server log has the details"
    if correlation_id:
        message += f" (correlation id {correlation_id})"
    return envelope_response(500, ErrorCode.INTERNAL, message, retriable=False)


def envelope_response(
    status: int,
    code: str,
    message: str,
    *,
    retriable: bool = False,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Return a JSON ErrorEnvelope response with ``status`` (not retriable by default)."""
    body = ErrorEnvelope(code=str(code), message=message, retriable=retriable)
    return model_response(body, status=status, headers=headers, exclude_none=True)


def retry_after_seconds(retry_after_ms: int | None) -> int:
    """Return the Retry-After value: whole seconds, at least 1."""
    return max(1, math.ceil((retry_after_ms or 0) / 1000))


def describe_validation(exc: ValidationError) -> str:
    """Return one line naming each offending field (loc path) and what is wrong.

    The offending input values are never echoed.
    """
    problems = []
    for err in exc.errors(include_url=False, include_input=False)[:MAX_LISTED_PROBLEMS]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        what = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {what}")
    more = exc.error_count() - len(problems)
    suffix = f" (and {more} more)" if more > 0 else ""
    return "invalid request: " + "; ".join(problems) + suffix


def _orch_error(exc: OrchError) -> web.Response:
    headers: dict[str, str] = {}
    if exc.status == 429:
        retry_ms = exc.retry_after_ms if exc.retry_after_ms is not None else 1000
        headers["Retry-After"] = str(retry_after_seconds(retry_ms))
        headers["X-Backoff-Ms"] = str(retry_ms)
    elif exc.status == 503 and exc.retry_after_ms is not None:
        headers["Retry-After"] = str(retry_after_seconds(exc.retry_after_ms))
    return model_response(exc.envelope(), status=exc.status, headers=headers, exclude_none=True)


def _api_error(exc: ApiError) -> web.Response:
    body: dict[str, object] = {"code": exc.code, "message": exc.message}
    if exc.hint is not None:
        body["hint"] = exc.hint
    return dict_response(body, status=exc.status, headers=exc.headers)


def _http_error(exc: web.HTTPException) -> web.Response:
    status = exc.status
    if status == 404:
        return envelope_response(
            404, "NOT_FOUND", "no such route; GET /openapi.json lists them", retriable=False
        )
    if status == 405:
        allowed = exc.headers.get("Allow", "")
        return envelope_response(
            405,
            "METHOD_NOT_ALLOWED",
            f"method not allowed here; allowed: {allowed or 'none'}",
            retriable=False,
            headers={"Allow": allowed},
        )
    if status == 413:
        return envelope_response(
            413, ErrorCode.INVALID_PARAMS, "request body too large; send a smaller body"
        )
    code = ErrorCode.INVALID_PARAMS if 400 <= status < 500 else ErrorCode.INTERNAL
    return envelope_response(status, code, exc.reason or "request refused")
