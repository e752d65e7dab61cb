"""A pool served by an external OpenAI-compatible engine.

Works with llama.cpp's ``llama-server``, vLLM, Ollama, LM Studio or another
llama-orch: anything that answers ``GET {base_url}/models`` and streams
``POST {base_url}/chat/completions`` and ``/completions``. A periodic health
check drives the pool's state. The API key is read from the environment
variable the config names and never appears in logs, reprs, errors or status.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from app.engine_host.lazy_session import LazySession
from app.engine_host.mailbox import Mailbox
from app.engine_host.openai_client import OpenAIStream, open_stream, redact, request_body
from app.engine_host.publisher import PublishedStatus, StatusPublisher
from app.orchestrator.contracts import ENGINE_FEATURES, ErrorCode
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.ports import Clock, EngineError, EngineRequest, PoolDescriptor, SystemClock

Sleep = Callable[[float], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class OpenAISpec:
    """How to reach one external engine. ``api_key_env`` names a variable, never the key."""

    pool_id: str
    base_url: str
    model: str
    api_key_env: str | None = None
    ctx: int = 4096
    slots: int = 4
    device_mask: str = "remote"
    connect_timeout_s: float = 5.0
    decode_timeout_s: float = 60.0
    health_interval_s: float = 10.0
    health_timeout_s: float = 10.0


class Secret:
    """A string that prints as ``<redacted>``; ``reveal()`` returns the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value (only for building request headers)."""
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


class HealthProblem(Exception):
    """The engine failed a health check; the message is safe to show."""


@dataclass
class _Command:
    kind: Literal["check", "probe", "reload", "stop"]
    model: str = ""
    reply: asyncio.Future[str] | None = None


class OpenAIEngine(PublishedStatus):
    """``EngineControl`` for an external OpenAI-compatible engine (no local process)."""

    def __init__(
        self,
        spec: OpenAISpec,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._spec = spec
        self._base = spec.base_url.rstrip("/")
        self._clock = clock if clock is not None else SystemClock()
        self._sleep = sleep
        self._environ = environ if environ is not None else os.environ
        self._key: Secret | None = None
        self._model = spec.model
        self._version = "unknown"
        self._pool = StatusPublisher(self._describe(), clock=self._clock)
        # kept-alive connections (a connect per request costs more than the request's
        # own work); one the engine closed after an answer (llama-server does so while
        # announcing keep-alive) is replaced by a fresh one (openai_client.open_stream)
        self._http = LazySession()
        self._mailbox: Mailbox[_Command] = Mailbox(self._run, name=f"pool-{spec.pool_id}")

    def __repr__(self) -> str:
        return f"OpenAIEngine(pool_id={self._spec.pool_id!r}, base_url={self._base!r})"

    async def start(self) -> None:
        """Begin health checks; returns once the pool is starting. Never raises."""
        await self._mailbox.send(_Command("check"))

    async def restart(self) -> None:
        """Re-read the API key and check the engine again now; returns once checked."""
        await self._mailbox.send(_Command("check"))

    async def stop(self) -> None:
        """Stop health checks and close the HTTP session; waits for both."""
        await self._mailbox.close(_Command("stop"))
        await self._http.close()

    async def reload(self, model_ref: str) -> str:
        """Serve the engine's model ``model_ref`` from now on; returns a message.

        Raises EngineError: INVALID_PARAMS when the engine does not list the
        model, POOL_UNAVAILABLE when it cannot be asked. The old model stays
        in use on failure. Waits for one ``/models`` request.
        """
        return await self._mailbox.send(_Command("reload", model=model_ref))

    async def open_stream(self, request: EngineRequest) -> OpenAIStream:
        """Send ``request`` to the engine; returns once it accepted it.

        Raises EngineError: POOL_UNREADY when the pool is not ready, else
        what ``openai_client.open_stream`` raises. Awaits the response headers.
        """
        if self._pool.state is not PoolState.READY:
            raise self._pool.unready()
        path, body = request_body(request, self._model)
        body["stream_options"] = {"include_usage": True}
        try:
            return await open_stream(
                self._http(),
                f"{self._base}/{path}",
                body,
                decode_timeout_s=self._spec.decode_timeout_s,
                connect_timeout_s=self._spec.connect_timeout_s,
                name=f"engine of pool {self._spec.pool_id}",
                headers=self._headers(),
                secrets=self._secrets(),
                on_finish=self._stream_finished,
            )
        except EngineError as exc:
            self._stream_finished(exc)
            raise

    def _stream_finished(self, error: EngineError | None) -> None:
        """A remote engine that timed out is probed now (never killed: it is not ours)."""
        timed_out = error is not None and error.code is ErrorCode.DECODE_TIMEOUT
        if timed_out and self._pool.state is PoolState.READY:
            self._mailbox.post(_Command("probe"))

    # ---- the owner task: health checks and commands ----

    async def _run(self) -> None:
        try:
            while True:
                command = await self._next_command()
                if command is None or command.kind in ("check", "probe"):
                    await self._check(first=command is not None and command.kind == "check")
                elif command.kind == "reload":
                    await self._reload(command)
                if command is not None and command.reply and not command.reply.done():
                    command.reply.set_result("")
                if command is not None and command.kind == "stop":
                    return
        finally:
            if self._pool.can(PoolState.STOPPING):
                self._publish(PoolState.STOPPING, "stopping")
            if self._pool.can(PoolState.STOPPED):
                self._publish(PoolState.STOPPED, "")
            stopped = EngineError(ErrorCode.POOL_UNAVAILABLE, f"pool {self._spec.pool_id} stopped")
            self._mailbox.refuse_queued(stopped)

    async def _next_command(self) -> _Command | None:
        """Return the next command, or None when the health interval passed first."""
        if self._pool.state in (PoolState.STOPPED, PoolState.STOPPING):
            return await self._mailbox.commands.get()
        getter = asyncio.ensure_future(self._mailbox.commands.get())
        timer = asyncio.ensure_future(self._sleep(self._spec.health_interval_s))
        await asyncio.wait({getter, timer}, return_when=asyncio.FIRST_COMPLETED)
        timer.cancel()
        if getter.done():
            return getter.result()
        getter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await getter
        return None

    async def _check(self, *, first: bool) -> None:
        if first:
            self._key = self._read_key()
            if self._pool.state is not PoolState.READY:
                self._publish(PoolState.STARTING, f"checking {self._base}")
        try:
            models = await self._list_models()
        except HealthProblem as exc:
            self._publish(PoolState.FAILED, str(exc))
            return
        if self._model not in models:
            self._publish(PoolState.FAILED, self._not_listed(self._model, models))
            return
        self._pool.descriptor = self._describe()
        self._become_ready("engine answers again")

    def _become_ready(self, why: str) -> None:
        if self._pool.state in (PoolState.FAILED, PoolState.STOPPED):
            self._publish(PoolState.STARTING, why)
        self._publish(PoolState.READY, "")

    async def _reload(self, command: _Command) -> None:
        assert command.reply is not None
        if self._pool.state is PoolState.STOPPED:
            self._key = self._read_key()
        try:
            models = await self._list_models()
        except HealthProblem as exc:
            why = f"cannot reload pool {self._spec.pool_id}: {exc}"
            command.reply.set_exception(
                EngineError(ErrorCode.POOL_UNAVAILABLE, why, retriable=True)
            )
            return
        if command.model not in models:
            why = self._not_listed(command.model, models) + f"; {self._model} stays in use"
            command.reply.set_exception(EngineError(ErrorCode.INVALID_PARAMS, why))
            return
        self._model = command.model
        self._pool.descriptor = self._describe()
        self._become_ready(f"switching to {self._model}")
        command.reply.set_result(f"pool {self._spec.pool_id} now serves {self._model}")

    def _not_listed(self, model: str, models: list[str]) -> str:
        offered = ", ".join(models[:20]) or "no models"
        return f"model {model!r} is not served by {self._base} (it serves: {offered})"

    async def _list_models(self) -> list[str]:
        """Return the model ids ``GET {base_url}/models`` lists. Raises HealthProblem."""
        if self._spec.api_key_env and self._key is None:
            raise HealthProblem(
                f"environment variable {self._spec.api_key_env} is not set; "
                "export it with the engine's API key, then restart the pool"
            )
        timeout = aiohttp.ClientTimeout(total=self._spec.health_timeout_s)
        url = f"{self._base}/models"
        try:
            async with self._http().get(url, headers=self._headers(), timeout=timeout) as resp:
                self._version = resp.headers.get("Server", self._version)
                self._raise_for_health(resp.status)
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise HealthProblem(f"health check GET {url} failed ({why})") from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise HealthProblem(f"{url} did not answer with an OpenAI model list")
        return [str(item.get("id")) for item in data if isinstance(item, dict)]

    def _raise_for_health(self, status: int) -> None:
        url = f"{self._base}/models"
        if status in (401, 403):
            var = self._spec.api_key_env or "api_key_env"
            raise HealthProblem(
                f"the engine at {url} rejected the API key (HTTP {status}); "
                f"check the environment variable {var}"
            )
        if status != 200:
            raise HealthProblem(f"health check GET {url} answered HTTP {status}")

    # ---- helpers ----

    def _read_key(self) -> Secret | None:
        name = self._spec.api_key_env
        value = self._environ.get(name, "") if name else ""
        return Secret(value) if value else None

    def _headers(self) -> dict[str, str]:
        key = self._key
        return {"Authorization": f"Bearer {key.reveal()}"} if key is not None else {}

    def _secrets(self) -> tuple[str, ...]:
        return (self._key.reveal(),) if self._key is not None else ()

    def _describe(self) -> PoolDescriptor:
        spec = self._spec
        return PoolDescriptor(
            pool_id=spec.pool_id,
            engine="openai",
            engine_version=redact(self._version, self._secrets()),
            model=self._model,
            ctx=spec.ctx,
            slots=spec.slots,
            device_mask=spec.device_mask,
            features=frozenset(ENGINE_FEATURES),  # the remote engine judges them itself
        )

    def _publish(self, state: PoolState, detail: str) -> None:
        detail = redact(detail, self._secrets()) if detail else ""
        current = self._pool.status
        same = state is current.state and detail == current.detail
        if same and state is not PoolState.STOPPED:
            return
        self._pool.publish(state, detail)
