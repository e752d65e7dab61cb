"""Both state machines of the product: a task's lifecycle and a pool's supervision.

Each is an explicit ``StrEnum`` with a transition table; ``StateMachine``
moves along a table and raises ``IllegalTransition`` for an edge the table
does not have. Pure: no clock, no I/O, no logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Generic, TypeVar


class TaskState(StrEnum):
    """Where one task is; serialises as its value ("queued", "done", ...)."""

    QUEUED = "queued"
    DISPATCHED = "dispatched"
    STREAMING = "streaming"
    DONE = "done"
    CANCELED = "canceled"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """Return True for done, canceled and failed (no edge leaves them)."""
        return not TASK_TRANSITIONS[self]


class PoolState(StrEnum):
    """Supervision state of one pool's engine; serialises as its value."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPING = "stopping"
    FAILED = "failed"
    NEEDS_MODEL = "needs_model"

    @property
    def live(self) -> bool:
        """Return True while the engine runs or is on its way up or down."""
        return self not in _POOL_NOT_LIVE

    @property
    def serving(self) -> bool:
        """Return True when the engine takes new streams (ready or draining)."""
        return self in (PoolState.READY, PoolState.DRAINING)


_POOL_NOT_LIVE = frozenset({PoolState.STOPPED, PoolState.FAILED, PoolState.NEEDS_MODEL})

T = TaskState
TASK_TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = {
    T.QUEUED: frozenset({T.DISPATCHED, T.CANCELED, T.FAILED}),
    T.DISPATCHED: frozenset({T.STREAMING, T.QUEUED, T.CANCELED, T.FAILED}),
    T.STREAMING: frozenset({T.DONE, T.CANCELED, T.FAILED}),
    T.DONE: frozenset(),
    T.CANCELED: frozenset(),
    T.FAILED: frozenset(),
}

P = PoolState
POOL_TRANSITIONS: Mapping[PoolState, frozenset[PoolState]] = {
    P.STOPPED: frozenset({P.STARTING, P.NEEDS_MODEL}),
    P.NEEDS_MODEL: frozenset({P.STARTING, P.STOPPING, P.STOPPED}),
    P.STARTING: frozenset({P.READY, P.FAILED, P.STOPPING}),
    P.READY: frozenset({P.DRAINING, P.STARTING, P.STOPPING, P.FAILED}),
    P.DRAINING: frozenset({P.READY, P.STARTING, P.STOPPING, P.FAILED}),
    P.STOPPING: frozenset({P.STOPPED}),
    P.FAILED: frozenset({P.STARTING, P.STOPPING, P.NEEDS_MODEL}),
}

E = TypeVar("E", TaskState, PoolState)


class IllegalTransition(RuntimeError):
    """Raised when a task or pool is asked to move along an edge its table does not have."""

    def __init__(
        self, kind: str, current: StrEnum, target: StrEnum, allowed: frozenset[StrEnum]
    ) -> None:
        names = ", ".join(sorted(allowed)) or "none"
        super().__init__(
            f"illegal {kind} state transition {current} -> {target} (from {current}: {names})"
        )
        self.current = current
        self.target = target


class StateMachine(Generic[E]):
    """The state of one task or pool, changed only along its table by its one owner."""

    __slots__ = ("_kind", "_state", "_table")

    def __init__(self, kind: str, table: Mapping[E, frozenset[E]], initial: E) -> None:
        self._kind = kind
        self._table: Mapping[E, frozenset[E]] = table
        self._state: E = initial

    @property
    def state(self) -> E:
        """Return the current state."""
        return self._state

    @property
    def terminal(self) -> bool:
        """Return True once no edge leaves the current state."""
        return not self._table[self._state]

    def can(self, target: E) -> bool:
        """Return True when ``target`` is reachable from the current state in one step."""
        return target in self._table[self._state]

    def to(self, target: E) -> E:
        """Move to ``target`` and return the previous state.

        Raises IllegalTransition (and keeps the state) when the table forbids it.
        """
        allowed = self._table[self._state]
        if target not in allowed:
            raise IllegalTransition(self._kind, self._state, target, allowed)
        previous, self._state = self._state, target
        return previous


def task_lifecycle(initial: TaskState = TaskState.QUEUED) -> StateMachine[TaskState]:
    """Return a task state machine starting at ``initial`` (queued by default)."""
    return StateMachine("task", TASK_TRANSITIONS, initial)


def pool_lifecycle(initial: PoolState = PoolState.STOPPED) -> StateMachine[PoolState]:
    """Return a pool state machine starting at ``initial`` (stopped by default)."""
    return StateMachine("pool", POOL_TRANSITIONS, initial)
