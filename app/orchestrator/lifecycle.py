"""Task lifecycle: an explicit state enum and transition table."""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    STREAMING = "streaming"
    DONE = "done"
    CANCELED = "canceled"
    FAILED = "failed"


TERMINAL: frozenset[TaskState] = frozenset({TaskState.DONE, TaskState.CANCELED, TaskState.FAILED})

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.DISPATCHED, TaskState.CANCELED, TaskState.FAILED}),
    TaskState.DISPATCHED: frozenset(
        {TaskState.STREAMING, TaskState.QUEUED, TaskState.CANCELED, TaskState.FAILED}
    ),
    TaskState.STREAMING: frozenset({TaskState.DONE, TaskState.CANCELED, TaskState.FAILED}),
    TaskState.DONE: frozenset(),
    TaskState.CANCELED: frozenset(),
    TaskState.FAILED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """Raised when a task is asked to move along an edge the table does not have."""


class Lifecycle:
    """The state of one task. Mutated only by the task's owner."""

    __slots__ = ("state",)

    def __init__(self, state: TaskState = TaskState.QUEUED) -> None:
        self.state = state

    @property
    def terminal(self) -> bool:
        """Return True once the task reached done, canceled or failed."""
        return self.state in TERMINAL

    def to(self, new: TaskState) -> None:
        """Move to ``new``. Raises IllegalTransition if the table forbids it."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"task cannot go from {self.state} to {new}")
        self.state = new
