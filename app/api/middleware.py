"""Request context: correlation id, the error mapper hook, per-request log line, headers."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from app.api.auth import cors_headers
from app.api.errors import error_response
from app.api.state import CORRELATION_ID, IDENTITY, SETTINGS

log = logging.getLogger("llama_orch.api")

CORRELATION_HEADER = "X-Correlation-Id"
SUBMISSIONS = frozenset(("/v1/tasks", "/v1/chat/completions", "/v1/completions"))
"""The data-plane POSTs: an accepted one is logged at DEBUG (its task logs its end at INFO)."""
_CORRELATION = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def correlation_id_for(sent: str | None) -> str:
    """Return ``sent`` when it is 1-128 chars of [A-Za-z0-9._-], else a new UUIDv4."""
    if sent is not None and _CORRELATION.match(sent):
        return sent
    return str(uuid.uuid4())


def log_fields(request: web.Request, **more: object) -> dict[str, object]:
    """Return the ``extra`` for a log record of ``request`` (correlation id, identity)."""
    fields: dict[str, object] = {
        "correlation_id": request.get(CORRELATION_ID, ""),
        "identity": request.get(IDENTITY, "unauthenticated"),
        **more,
    }
    return {"fields": fields}


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Assign the correlation id, map any exception to its error response, log one line."""
    cid = correlation_id_for(request.headers.get(CORRELATION_HEADER))
    request[CORRELATION_ID] = cid
    started = time.monotonic()
    try:
        response = await handler(request)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        response = error_response(exc, cid)
    _log_request(request, response.status, started)
    return response


def _log_request(request: web.Request, status: int, started: float) -> None:
    level = logging.INFO if status >= 400 else logging.DEBUG
    if level == logging.DEBUG and request.method != "GET" and request.path not in SUBMISSIONS:
        level = logging.INFO  # control-plane changes (drain, reload, cancel, ...)
    if log.isEnabledFor(level):
        ms = int((time.monotonic() - started) * 1000)
        log.log(
            level,
            "%s %s -> %d in %d ms",
            request.method,
            request.path,
            status,
            ms,
            extra=log_fields(request, method=request.method, path=request.path, status=status),
        )


async def stamp_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: add X-Correlation-Id and (listed origins only) CORS headers."""
    cid = request.get(CORRELATION_ID) or correlation_id_for(None)
    response.headers[CORRELATION_HEADER] = cid
    if isinstance(request, web.Request):
        settings = request.app[SETTINGS].current
        response.headers.update(cors_headers(request.headers.get(hdrs.ORIGIN), settings))
