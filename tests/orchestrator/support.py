"""Helpers shared by the core's tests: the payload of a stream's terminal event."""

from __future__ import annotations

from collections.abc import Sequence

from app.orchestrator.events import END, ERROR, EndData, ErrorData, TaskEvent


def end_of(events: Sequence[TaskEvent], at: int = -1) -> EndData:
    """Return the payload of ``events[at]``, asserting that it is an ``end`` event."""
    event = events[at]
    assert event.kind == END, event
    return event.data


def error_of(events: Sequence[TaskEvent], at: int = -1) -> ErrorData:
    """Return the payload of ``events[at]``, asserting that it is an ``error`` event."""
    event = events[at]
    assert event.kind == ERROR, event
    return event.data
