"""Requests to a llama-orch server: JSON calls, SSE task streams, and one sentence
for every way a call can fail (unreachable, wrong token, refused)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from app.ask import sse_events
from app.orchestrator.contracts import ErrorCode
from app.orchestrator.errors import OrchError
from app.orchestrator.events import (
    EndEvent,
    ErrorEvent,
    MetricsEvent,
    StartedEvent,
    TaskEvent,
    TokenEvent,
)

_EVENTS: dict[str, Any] = {
    "started": StartedEvent,
    "token": TokenEvent,
    "metrics": MetricsEvent,
    "end": EndEvent,
    "error": ErrorEvent,
}


class Unreachable(OrchError):
    """The server did not answer (connection refused, reset, timed out)."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(
            ErrorCode.POOL_UNAVAILABLE,
            f"Cannot reach the llama-orch server at {url} ({why}).",
            status=503,
            retriable=True,
        )


class Unauthorized(OrchError):
    """The server refused the bearer token (401/403)."""

    def __init__(self, url: str, status: int, has_token: bool) -> None:
        what = "refused the token" if has_token else "needs a token"
        super().__init__(
            "UNAUTHORIZED",
            f"The server at {url} {what} (HTTP {status}): pass the server's token with "
            "--token-file FILE, a file holding the token the server was given.",
            status=status,
            retriable=False,
        )


def read_token(path: str) -> str:
    """Return the token in ``path``. Raises ValueError with a sentence. Blocks (disk)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise ValueError(f"the token file {path} is empty; write the server's token there")
    return token


class ServerClient:
    """One server: base URL, bearer token and an aiohttp session (open to ``close``)."""

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str) -> Any:
        """Return the JSON of ``GET path``. Raises OrchError (Unreachable, Unauthorized,
        the server's refusal)."""
        return await self.request("GET", path)

    async def get_text(self, path: str) -> str:
        """Return the body of ``GET path`` as text. Raises like ``get``."""
        try:
            async with self._open().get(self.url + path, timeout=self._timeout) as resp:
                await self._check(resp)
                return await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unreachable(self.url, _describe(exc)) from None

    async def request(
        self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None
    ) -> Any:
        """Return the JSON answer of ``method path`` with JSON ``body`` (None: no body),
        waiting up to ``timeout_s`` (default: the client's). Raises OrchError."""
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else self._timeout
        try:
            async with self._open().request(
                method, self.url + path, json=body, timeout=timeout
            ) as resp:
                await self._check(resp)
                return await resp.json()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unreachable(self.url, _describe(exc)) from None

    async def events(self, task_id: str) -> AsyncIterator[TaskEvent]:
        """Yield the task's SSE events until the terminal one. Raises OrchError."""
        no_limit = aiohttp.ClientTimeout(total=None, sock_connect=10)
        path = f"{self.url}/v1/tasks/{task_id}/stream"
        try:
            async with self._open().get(path, timeout=no_limit) as resp:
                await self._check(resp)
                async for kind, data in sse_events(resp.content):
                    if kind in _EVENTS:
                        yield _EVENTS[kind](kind, data)
                    if kind in ("end", "error"):
                        return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unreachable(self.url, _describe(exc)) from None
        raise Unreachable(self.url, "the stream ended before the task finished")

    async def _check(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        if resp.status in (401, 403):
            raise Unauthorized(self.url, resp.status, self.token is not None)
        raise refusal(resp.status, await resp.text())


def refusal(status: int, text: str) -> OrchError:
    """Return the OrchError for an error answer (the server's envelope when it sent one)."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return OrchError(
            str(body.get("code") or "INTERNAL"),
            body["message"],
            status=status,
            pool_id=body.get("pool_id"),
            retriable=body.get("retriable"),
            retry_after_ms=body.get("retry_after_ms"),
        )
    return OrchError(ErrorCode.INTERNAL, f"the server answered HTTP {status}", status=status)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or "connection refused"
    return str(exc) or type(exc).__name__
