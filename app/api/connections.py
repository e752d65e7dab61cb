"""Connection limits of the HTTP listener, so idle or hostile sockets cannot starve it.

A connection must send its first request head within ``head_timeout_s``;
each peer address may hold ``per_peer`` connections and all peers together
``total`` (by default derived from the open-file limit, so accepting never
runs out of descriptors because of HTTP clients). The process raises its
open-file soft limit to the hard limit at start, and failed accepts are
reported as one rate-limited log line instead of a traceback each.

Everything here runs on the event loop's thread; only the first request head
of a connection passes through the guard's checks, later bytes are handed on
with one call.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

log = logging.getLogger("llama_orch.api")

FD_RESERVE = 128
_HEAD_END = b"\r\n\r\n"
_TOO_MANY_BODY = b"Too many open connections from your address; close idle ones and retry.\n"
_TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_TOO_MANY_BODY), _TOO_MANY_BODY)
)
_ACCEPT_FAILED = "socket.accept() out of system resource"


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a connection may stay silent and how many may be open.

    ``per_peer`` 0 means no per-peer cap; ``total`` 0 means the open-file
    soft limit minus a reserve for engines, logs and the database.
    """

    head_timeout_s: float = 10.0
    keepalive_s: float = 60.0
    per_peer: int = 512
    total: int = 0


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force.

    Never raises (a platform that refuses keeps its limit). Does not block.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        log.info("raised the open-file limit from %d to %d", soft, target)
        return target
    return soft


def default_total(soft_limit: int) -> int:
    """Return the connection cap for an open-file limit: the limit less a reserve. Pure."""
    return max(16, soft_limit - max(FD_RESERVE, soft_limit // 8))


class ConnectionGuard:
    """Counts the listener's open connections per peer and refuses those over a cap."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.total_cap = limits.total or default_total(soft)
        self._per_peer: dict[str, int] = {}
        self._open = 0

    @property
    def open_connections(self) -> int:
        """Return how many connections are open now."""
        return self._open

    def admit(self, peer: str) -> bool:
        """Count a new connection from ``peer``; return False (not counted) over a cap."""
        held = self._per_peer.get(peer, 0)
        per_peer = self.limits.per_peer
        if self._open >= self.total_cap or (per_peer and held >= per_peer):
            return False
        self._per_peer[peer] = held + 1
        self._open += 1
        return True

    def release(self, peer: str) -> None:
        """Forget one connection of ``peer``."""
        held = self._per_peer.get(peer, 0) - 1
        if held > 0:
            self._per_peer[peer] = held
        else:
            self._per_peer.pop(peer, None)
        self._open -= 1

    def protocol(self, inner: asyncio.Protocol) -> GuardedConnection:
        """Return ``inner`` (aiohttp's request handler) behind this guard."""
        return GuardedConnection(inner, self)


class GuardedConnection(asyncio.Protocol):
    """Forwards to aiohttp's handler; closes a connection whose first head is late."""

    __slots__ = ("_guard", "_inner", "_peer", "_tail", "_timer", "_transport")

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._peer: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's does not subclass asyncio.Transport)
        self._transport = transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        if not self._guard.admit(peer):
            transport.write(_TOO_MANY)
            transport.close()
            return
        self._peer = peer
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.head_timeout_s, self._head_late)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._peer is None:
            return
        if self._timer is not None:
            seen = self._tail + data
            if _HEAD_END in seen:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._peer is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._peer is None:
            return
        self._guard.release(self._peer)
        self._peer = None
        self._inner.connection_lost(exc)

    def _head_late(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.close()


class GuardedSite(web.SockSite):
    """A ``SockSite`` whose connections pass through a ``ConnectionGuard``."""

    def __init__(
        self, runner: web.BaseRunner, sock: Any, guard: ConnectionGuard, **kwargs: Any
    ) -> None:
        super().__init__(runner, sock, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        """Listen on the socket; awaits the listener."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        guard = self._guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: guard.protocol(server()), sock=self._sock, backlog=self._backlog
        )


Now = Callable[[], float]


class AcceptErrorReporter:
    """A loop exception handler: failed accepts become one log line per interval.

    At descriptor exhaustion asyncio reports every failed accept with a
    traceback; this counts them and logs one line naming the fix at most
    every ``interval_s``. Other errors go to the previous handler.
    """

    def __init__(
        self,
        previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
        *,
        interval_s: float = 10.0,
        now: Now = time.monotonic,
    ) -> None:
        self._previous = previous
        self._interval = interval_s
        self._now = now
        self._last: float | None = None
        self._count = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith(_ACCEPT_FAILED):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self._count += 1
        now = self._now()
        if self._last is not None and now - self._last < self._interval:
            return
        exc = context.get("exception")
        why = getattr(exc, "strerror", None) or str(exc or "no resources")
        log.error(
            "cannot accept new connections: %s (%d failed accepts since the last report); "
            "raise the open-file limit (ulimit -n) or lower [server] max_connections",
            why,
            self._count,
        )
        self._last, self._count = now, 0


def install_accept_error_reporter(loop: asyncio.AbstractEventLoop) -> None:
    """Put an ``AcceptErrorReporter`` on ``loop`` (once; keeps the previous handler)."""
    current = loop.get_exception_handler()
    if not isinstance(current, AcceptErrorReporter):
        loop.set_exception_handler(AcceptErrorReporter(current))
