"""A pool's published status, shared by every engine adapter.

``StatusPublisher`` holds a pool's descriptor and latest status, moves it
along the pool table of ``orchestrator.lifecycle``, tells the listeners about
every change and wakes the tasks waiting for a state; ``PublishedStatus``
gives an engine the matching ``EngineControl`` members.
"""

from __future__ import annotations

import asyncio
import logging

from app.orchestrator.contracts import ErrorCode
from app.orchestrator.lifecycle import PoolState, pool_lifecycle
from app.orchestrator.ports import (
    Clock,
    EngineError,
    PoolDescriptor,
    PoolListener,
    PoolStatus,
    SystemClock,
)

log = logging.getLogger(__name__)


class StatusPublisher:
    """The descriptor and status of one pool, with its listeners and waiters.

    Every published state must follow the pool table (``publish`` raises
    IllegalTransition otherwise); republishing the current state is allowed.
    """

    def __init__(self, descriptor: PoolDescriptor, *, clock: Clock | None = None) -> None:
        self.descriptor = descriptor
        self._clock = clock if clock is not None else SystemClock()
        self._machine = pool_lifecycle()
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
        """Return True when the pool table has an edge from the current state to ``target``."""
        return self._machine.can(target)

    def add_listener(self, listener: PoolListener) -> None:
        """Call ``listener(status)`` on the loop after every status change."""
        self._listeners.append(listener)

    def publish(
        self,
        state: PoolState,
        detail: str = "",
        *,
        crashes_recent: int = 0,
        crashes_total: int = 0,
        restarts_total: int = 0,
    ) -> None:
        """Record a new status, call every listener and wake the waiters.

        ``crashes_total`` and ``restarts_total`` count since the engine object was made.

        Raises IllegalTransition when the table forbids ``state``. A listener
        that raises is logged and the others still run. Never blocks.
        """
        if state is not self._machine.state:
            self._machine.to(state)
        self._status = PoolStatus(
            state,
            detail,
            crashes_recent=crashes_recent,
            crashes_total=crashes_total,
            restarts_total=restarts_total,
            at=self._clock.time(),
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
