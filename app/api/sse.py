"""Server-Sent Events: one task's events written and flushed as they happen.

Frames are ``event: <kind>\\ndata: <compact json>\\n\\n``. The per-token path
does no logging and builds no pydantic model. A client that goes away (write
error, closed transport) gets its task canceled when ``cancel_on_disconnect``;
otherwise the task's remaining events are drained in the background so it can
finish and free its slot. Live streams are tracked so a shutdown can end each
one with an ``error`` frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from app.api.render import json_bytes
from app.orchestrator.events import ERROR, TERMINAL_KINDS, TOKEN, TaskEvent, TokenEvent
from app.orchestrator.service import StreamHandle

if TYPE_CHECKING:
    from app.api.task_artifacts import TranscriptArchive

log = logging.getLogger("llama_orch.api")

HEARTBEAT = b": keep-alive\n\n"
DISCONNECT_POLL_S = 0.25
SHUTDOWN_ERROR: dict[str, str | bool] = {
    "code": "POOL_UNAVAILABLE",
    "message": "server shutting down",
    "retriable": True,
}
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


MAX_EVENTS_PER_WRITE = 64
_HEADS: dict[str, bytes] = {}


def frame(kind: str, data: Mapping[str, object]) -> bytes:
    """Return one SSE frame for ``kind`` with ``data`` as compact JSON."""
    head = _HEADS.get(kind)
    if head is None:
        head = _HEADS[kind] = f"event: {kind}\ndata: ".encode()
    return head + json_bytes(data) + b"\n\n"


class FrameFormat(Protocol):
    """How a stream's events become bytes (the OrchQueue frames, or OpenAI chunks)."""

    def render(self, event: TaskEvent) -> bytes:
        """Return the bytes ``event`` is sent as (b"" sends nothing). Called per token."""
        ...

    def shutdown_bytes(self) -> bytes:
        """Return what ends a stream at server shutdown."""
        ...


class OrchQueueFrames:
    """The OrchQueue format: ``event: <kind>`` and ``data: <compact json>`` per event."""

    def render(self, event: TaskEvent) -> bytes:
        """Return the SSE frame of ``event``."""
        return frame(event.kind, event.data)

    def shutdown_bytes(self) -> bytes:
        """Return the ``error`` frame of a server shutdown."""
        return frame(ERROR, SHUTDOWN_ERROR)


ORCHQUEUE_FRAMES = OrchQueueFrames()


@dataclass(eq=False, slots=True)
class LiveStream:
    """A stream being served: the handler task that owns it."""

    task_id: str
    handler: asyncio.Task[Any]
    closing: bool = False


@dataclass(slots=True)
class LiveStreams:
    """Every stream being served, plus the background drains of abandoned ones.

    ``cancel_task`` is the facade's cancel (used when a drain is stopped);
    ``archive`` (when set) stores each finished stream's transcript.
    """

    cancel_task: Callable[[str], None]
    archive: TranscriptArchive | None = None
    streams: set[LiveStream] = field(default_factory=set)
    drains: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.streams)

    def register(self, task_id: str) -> LiveStream:
        """Track the calling handler task as the server of ``task_id``'s stream."""
        task = asyncio.current_task()
        assert task is not None
        live = LiveStream(task_id, task)
        self.streams.add(live)
        return live

    def drain(self, handle: StreamHandle) -> None:
        """Read ``handle`` to its end in the background (a reader that went away)."""
        task = asyncio.get_running_loop().create_task(_drain(handle))
        self.drains[handle.task_id] = task
        task.add_done_callback(lambda _t: self.drains.pop(handle.task_id, None))

    async def close_all(self, timeout_s: float = 5.0) -> None:
        """End every live stream with an ``error`` frame and stop the drains.

        Awaits the stream handlers for up to ``timeout_s``; never raises.
        """
        for live in list(self.streams):
            live.closing = True
            live.handler.cancel()
        for task_id, task in list(self.drains.items()):
            task.cancel()
            with contextlib.suppress(Exception):
                self.cancel_task(task_id)
        pending = [s.handler for s in self.streams] + list(self.drains.values())
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)


async def _drain(handle: StreamHandle) -> None:
    while await handle.next() is not None:
        pass


def client_gone(request: web.Request) -> bool:
    """Return True when the client's connection is closed or closing. Never blocks."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def next_event(
    request: web.Request, handle: StreamHandle, wait_s: float = DISCONNECT_POLL_S
) -> TaskEvent | None:
    """Return ``handle``'s next event (None after the terminal one); awaits up to ``wait_s``.

    Raises ConnectionResetError when the client already went away and TimeoutError
    when no event came within ``wait_s`` (call again to keep watching the client).
    """
    if client_gone(request):
        raise ConnectionResetError("the client closed the stream")
    async with asyncio.timeout(wait_s):
        return await handle.next()


class _Poll:
    """One re-armed timer per stream (not one per event) that interrupts the
    stream's wait every ``period_s``, so the writer can check the client and
    send heartbeats. Owned by one writer; never shared."""

    __slots__ = ("_due", "_fired", "_loop", "_period", "_task", "_timer")

    def __init__(self, period_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._period = period_s
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._fired = False
        self._due = False

    def _fire(self) -> None:
        self._timer = None
        if self._task is not None:
            self._fired = True
            self._task.cancel()
        else:
            self._due = True

    async def wait(self, handle: StreamHandle) -> TaskEvent | None:
        """Return ``handle``'s next event (None after the terminal one).

        Raises TimeoutError once per period. Cancel-safe.
        """
        if self._due:
            self._due = False
            raise TimeoutError
        if self._timer is None:
            self._timer = self._loop.call_later(self._period, self._fire)
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        try:
            return await handle.next()
        except asyncio.CancelledError:
            if self._fired:
                self._fired = False
                if task.uncancel() == 0:  # our interruption alone, no real cancel
                    raise TimeoutError from None
            raise
        finally:
            self._task = None

    def close(self) -> None:
        """Stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class SseWriter:
    """Writes one task's events to a prepared StreamResponse.

    ``heartbeat_s`` > 0 adds ``: keep-alive`` comments after that much silence;
    ``batch_s`` > 0 coalesces consecutive tokens arriving within that window;
    ``frames`` renders the events (OrchQueue frames unless told otherwise);
    ``transcript_bytes`` > 0 keeps the bytes written (one list append per write)
    in ``transcript`` until that many were kept (then ``truncated``).
    """

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        handle: StreamHandle,
        *,
        heartbeat_s: float = 0.0,
        batch_s: float = 0.0,
        frames: FrameFormat = ORCHQUEUE_FRAMES,
        transcript_bytes: int = 0,
    ) -> None:
        self.render = frames.render
        self.transcript: list[bytes] = []
        self.truncated = False
        self._keep_left = transcript_bytes
        self._keeping = transcript_bytes > 0
        self._frames = frames
        self._request = request
        self._response = response
        self._handle = handle
        self._heartbeat_s = heartbeat_s
        self._batch_s = batch_s
        self._pending: TaskEvent | None = None
        self._loop = asyncio.get_running_loop()
        self._last_write = self._loop.time()
        period = min(DISCONNECT_POLL_S, heartbeat_s) if heartbeat_s > 0 else DISCONNECT_POLL_S
        self._poll = _Poll(period)
        self.finished = False

    async def pump(self) -> None:
        """Write events until the terminal one (then end the body). Awaits the task.

        Raises ConnectionError when the client went away.
        """
        try:
            await self._pump()
        finally:
            self._poll.close()

    async def _pump(self) -> None:
        get_nowait = self._handle.channel.get_nowait
        while True:
            event = self._take_pending() or get_nowait() or await self._wait()
            if event is None:
                return
            if event.kind == TOKEN and self._batch_s > 0 and "x" not in event.data:
                event = await self._coalesce(event)
                data = self.render(event)
            else:
                event, data = self._with_buffered(event, get_nowait)
            if event.kind in TERMINAL_KINDS:
                await self._end(data)
                return
            if data:
                await self._write(data)

    def _with_buffered(
        self, event: TaskEvent, get_nowait: Callable[[], TaskEvent | None]
    ) -> tuple[TaskEvent, bytes]:
        """Return the last event taken and the bytes of ``event`` plus the events
        already buffered behind it (up to a terminal one), for one write."""
        render = self.render
        frames = [render(event)]
        while event.kind not in TERMINAL_KINDS and len(frames) < MAX_EVENTS_PER_WRITE:
            nxt = get_nowait()
            if nxt is None:
                break
            event = nxt
            frames.append(render(event))
        return event, frames[0] if len(frames) == 1 else b"".join(frames)

    async def write_shutdown_error(self) -> None:
        """Write the format's shutdown bytes and end the body."""
        await self._end(self._frames.shutdown_bytes())

    async def _end(self, data: bytes) -> None:
        """Write the last bytes of the stream and end the body, in one send."""
        if self._keeping:
            self._keep(data)
        self.finished = True
        await self._response.write_eof(data)

    def _take_pending(self) -> TaskEvent | None:
        event, self._pending = self._pending, None
        return event

    async def _write(self, data: bytes) -> None:
        await self._response.write(data)
        self._last_write = self._loop.time()
        if self._keeping:
            self._keep(data)

    def _keep(self, data: bytes) -> None:
        """Add one written batch to the transcript, up to the byte budget."""
        self._keep_left -= len(data)
        if self._keep_left >= 0:
            self.transcript.append(data)
        else:  # a budget filled to the byte still keeps going until a write is dropped
            self.truncated, self._keeping = True, False

    async def _wait(self) -> TaskEvent | None:
        """Await the next event, writing heartbeats and watching for a disconnect."""
        while True:
            if client_gone(self._request):
                raise ConnectionResetError("the client closed the stream")
            silent = self._loop.time() - self._last_write
            if self._heartbeat_s > 0 and silent >= self._heartbeat_s:
                await self._write(HEARTBEAT)
                continue
            try:
                return await self._poll.wait(self._handle)
            except TimeoutError:
                continue

    async def _coalesce(self, first: TokenEvent) -> TokenEvent:
        """Return one token event holding the texts of tokens within the window."""
        texts = [first.data["t"]]
        deadline = self._loop.time() + self._batch_s
        channel = self._handle.channel
        while True:
            event = channel.get_nowait()
            if event is None:
                remaining = deadline - self._loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        event = await self._handle.next()
                except TimeoutError:
                    break
                if event is None:
                    break
            if event.kind != TOKEN or "x" in event.data:
                self._pending = event
                break
            texts.append(event.data["t"])
        if len(texts) == 1:
            return first
        return TokenEvent(TOKEN, {"t": "".join(texts), "i": first.data["i"]})


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How one stream is served (from the settings in force when it opened)."""

    heartbeat_ms: int = 0
    microbatch_ms: int = 0
    cancel_on_disconnect: bool = True


async def serve_stream(
    request: web.Request,
    handle: StreamHandle,
    streams: LiveStreams,
    options: StreamOptions,
    headers: Mapping[str, str],
    *,
    frames: FrameFormat = ORCHQUEUE_FRAMES,
) -> web.StreamResponse:
    """Serve ``handle``'s events as SSE until the terminal event. Awaits the task.

    ``frames`` renders the events (OpenAI chunks for the OpenAI-compatible
    routes). A client that goes away gets its task canceled
    (``cancel_on_disconnect``) or drained in the background; a shutdown ends the
    stream with the writer's shutdown error and cancels the task. Raises
    CancelledError when aiohttp cancels the handler.
    """
    response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
    writer = SseWriter(
        request,
        response,
        handle,
        heartbeat_s=options.heartbeat_ms / 1000,
        batch_s=options.microbatch_ms / 1000,
        frames=frames,
        transcript_bytes=0 if streams.archive is None else streams.archive.budget,
    )
    live = streams.register(handle.task_id)
    shutdown = False
    try:
        await response.prepare(request)
        await writer.pump()
    except ConnectionError:
        pass
    except asyncio.CancelledError:
        if not live.closing:
            raise
        shutdown = _uncancel()
        with contextlib.suppress(ConnectionError):
            await writer.write_shutdown_error()
    finally:
        streams.streams.discard(live)
        if streams.archive is not None:
            streams.archive.keep(handle.task_id, writer.transcript, writer.truncated)
        release_stream(handle, streams, options, finished=writer.finished, shutdown=shutdown)
    return response


def _uncancel() -> bool:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return True


def release_stream(
    handle: StreamHandle,
    streams: LiveStreams,
    options: StreamOptions,
    *,
    finished: bool,
    shutdown: bool = False,
) -> None:
    """Let go of a reader's ``handle``; never blocks, never raises.

    Nothing to do after the terminal event was delivered. Otherwise (the client
    went away, or a shutdown) the task is canceled (``cancel_on_disconnect`` or
    shutdown) or drained in the background so it can finish and free its slot.
    """
    if finished and not shutdown:
        return
    fields = {"correlation_id": handle.correlation_id, "job_id": handle.task_id}
    if shutdown or options.cancel_on_disconnect:
        with contextlib.suppress(Exception):
            streams.cancel_task(handle.task_id)
        why = "server shutting down" if shutdown else "client disconnected"
        log.info("stream closed (%s); task canceled", why, extra={"fields": fields})
        return
    streams.drain(handle)
    log.info("client disconnected; task keeps running", extra={"fields": fields})
