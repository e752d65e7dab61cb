"""What every engine adapter shares: published status, command mailbox, HTTP session.

``StatusPublisher`` holds a pool's descriptor and latest status, tells the
listeners about every change and wakes the tasks waiting for a state;
``PublishedStatus`` gives an engine the matching ``EngineControl`` members.
``Mailbox`` carries commands to the one asyncio task that owns an engine and
starts that task on first use, so only the owner ever changes the engine.
``LazySession`` is the aiohttp session an engine opens when it first needs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

import aiohttp

from app.engine_host.restart_policy import PoolStateMachine
from app.orchestrator.contracts import ErrorCode
from app.orchestrator.ports import (
    Clock,
    EngineError,
    PoolDescriptor,
    PoolListener,
    PoolState,
    PoolStatus,
    SystemClock,
)

log = logging.getLogger(__name__)


class StatusPublisher:
    """The descriptor and status of one pool, with its listeners and waiters.

    With a ``machine``, every published state must follow the supervision
    table (``publish`` raises IllegalTransition otherwise); without one, any
    state may follow any other.
    """

    def __init__(
        self,
        descriptor: PoolDescriptor,
        *,
        clock: Clock | None = None,
        machine: PoolStateMachine | None = None,
    ) -> None:
        self.descriptor = descriptor
        self._clock = clock if clock is not None else SystemClock()
        self._machine = machine
        self._status = PoolStatus(PoolState.STOPPED, at=self._clock.time())
        self._listeners: list[PoolListener] = []
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def status(self) -> PoolStatus:
        """Return the latest status snapshot."""
        return self._status

    @property
    def state(self) -> PoolState:
        """Return the latest published state."""
        return self._status.state

    def unready(self) -> EngineError:
        """Return the POOL_UNREADY error that names the current state and its detail."""
        status = self._status
        why = f"pool {self.descriptor.pool_id} is {status.state}"
        why += f": {status.detail}" if status.detail else ""
        return EngineError(ErrorCode.POOL_UNREADY, why, retriable=True)

    def can(self, target: PoolState) -> bool:
        """Return True when ``target`` may be published next (always, without a table)."""
        return self._machine is None or self._machine.can(target)

    def add_listener(self, listener: PoolListener) -> None:
        """Call ``listener(status)`` on the loop after every status change."""
        self._listeners.append(listener)

    def publish(self, state: PoolState, detail: str = "", *, crashes_recent: int = 0) -> None:
        """Record a new status, call every listener and wake the waiters.

        Raises IllegalTransition when the table forbids ``state``. A listener
        that raises is logged and the others still run. Never blocks.
        """
        if self._machine is not None and state is not self._machine.state:
            self._machine.transition(state)
        self._status = PoolStatus(
            state, detail, crashes_recent=crashes_recent, at=self._clock.time()
        )
        for listener in list(self._listeners):
            try:
                listener(self._status)
            except Exception:
                log.exception("pool %s: status listener failed", self.descriptor.pool_id)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, *states: PoolState, timeout_s: float) -> PoolStatus:
        """Return the status once its state is one of ``states``.

        Raises TimeoutError after ``timeout_s``. Blocks (asynchronously) until then.
        """
        async with asyncio.timeout(timeout_s):
            while self._status.state not in states:
                changed = asyncio.get_running_loop().create_future()
                self._waiters.append(changed)
                await changed
        return self._status


class PublishedStatus:
    """The status members of ``EngineControl``, served by the engine's ``_pool`` publisher."""

    _pool: StatusPublisher

    @property
    def descriptor(self) -> PoolDescriptor:
        """Return what the pool serves now."""
        return self._pool.descriptor

    @property
    def status(self) -> PoolStatus:
        """Return the latest status snapshot."""
        return self._pool.status

    def add_listener(self, listener: PoolListener) -> None:
        """Call ``listener(status)`` on the loop after every status change."""
        self._pool.add_listener(listener)

    async def wait_for(self, *states: PoolState, timeout_s: float) -> PoolStatus:
        """Return the status once its state is one of ``states``.

        Raises TimeoutError after ``timeout_s``. Blocks (asynchronously) until then.
        """
        return await self._pool.wait_for(*states, timeout_s=timeout_s)


class LazySession:
    """One aiohttp client session, opened on first use and again after ``close``.

    ``force_close`` opens a new connection per request: for servers that close
    a connection after a streamed answer while announcing keep-alive (as
    llama-server does), where a reused connection fails on the next request.
    """

    def __init__(self, *, force_close: bool = False) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._force_close = force_close

    def __call__(self) -> aiohttp.ClientSession:
        """Return the open session, opening a new one when there is none. Never blocks."""
        if self._session is None or self._session.closed:
            # no connection cap: a pool's slots, not aiohttp's default of 100
            # connections, bound how many engine requests run at once
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=0, force_close=self._force_close
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        """Close the session if one was opened; waits for its connections to close."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class Command(Protocol):
    """A command for an owner task; ``reply`` is set by ``Mailbox.send``."""

    reply: asyncio.Future[str] | None


C = TypeVar("C", bound=Command)


class Mailbox(Generic[C]):
    """The command queue of one owner task, which it starts when a command is sent."""

    def __init__(self, owner: Callable[[], Coroutine[Any, Any, None]], *, name: str) -> None:
        self.commands: asyncio.Queue[C] = asyncio.Queue()
        self._owner = owner
        self._name = name
        self._task: asyncio.Task[None] | None = None

    async def send(self, command: C) -> str:
        """Queue ``command`` (starting the owner task if it is not running) and await its reply.

        Returns the reply; raises what the owner task sets on it.
        """
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._owner(), name=self._name)
        command.reply = asyncio.get_running_loop().create_future()
        self.commands.put_nowait(command)
        return await command.reply

    def post(self, command: C) -> None:
        """Queue ``command`` without a reply and without starting the owner. Never blocks."""
        self.commands.put_nowait(command)

    async def close(self, stop: C) -> None:
        """Post ``stop`` and wait for the owner task to end; returns at once when none runs."""
        task = self._task
        if task is not None and not task.done():
            self.commands.put_nowait(stop)
            await asyncio.shield(task)

    def refuse_queued(self, error: BaseException, *also: C) -> None:
        """Answer every queued command (and ``also``) with ``error``; for the owner's last act."""
        queued = list(also)
        while not self.commands.empty():
            queued.append(self.commands.get_nowait())
        for command in queued:
            if command.reply is not None and not command.reply.done():
                command.reply.set_exception(error)
