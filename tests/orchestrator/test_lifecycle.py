"""Both state tables: every task edge, the documented pool walk, illegal moves."""

from __future__ import annotations

import pytest

from app.orchestrator.lifecycle import (
    POOL_TRANSITIONS,
    TASK_TRANSITIONS,
    IllegalTransition,
    PoolState,
    TaskState,
    pool_lifecycle,
    task_lifecycle,
)

S = PoolState


@pytest.mark.parametrize("src", list(TaskState))
@pytest.mark.parametrize("dst", list(TaskState))
def test_transition_table_is_enforced(src: TaskState, dst: TaskState) -> None:
    lc = task_lifecycle(src)
    if dst in TASK_TRANSITIONS[src]:
        lc.to(dst)
        assert lc.state is dst
    else:
        with pytest.raises(IllegalTransition):
            lc.to(dst)
        assert lc.state is src


def test_terminal_states_have_no_exit() -> None:
    for state in (TaskState.DONE, TaskState.CANCELED, TaskState.FAILED):
        assert task_lifecycle(state).terminal
        assert TASK_TRANSITIONS[state] == frozenset()


def test_state_machine_walks_the_documented_lifecycle() -> None:
    machine = pool_lifecycle()
    path = [S.STARTING, S.READY, S.DRAINING, S.STOPPING, S.STOPPED]
    path += [S.STARTING, S.FAILED, S.STARTING, S.READY, S.STARTING, S.READY, S.FAILED]
    path += [S.STOPPING, S.STOPPED, S.NEEDS_MODEL, S.STARTING]
    for target in path:
        machine.to(target)
        assert machine.state is target


@pytest.mark.parametrize(
    ("start_path", "target"),
    [
        ((), S.READY),
        ((), S.DRAINING),
        ((S.STARTING,), S.STOPPED),
        ((S.STARTING,), S.DRAINING),
        ((S.STARTING, S.READY), S.STOPPED),
        ((S.STARTING, S.FAILED), S.READY),
        ((S.STARTING, S.READY, S.STOPPING), S.READY),
        ((S.STARTING, S.READY, S.STOPPING), S.STARTING),
    ],
)
def test_illegal_transitions_raise_and_keep_the_state(
    start_path: tuple[PoolState, ...], target: PoolState
) -> None:
    machine = pool_lifecycle()
    for state in start_path:
        machine.to(state)
    before = machine.state
    assert not machine.can(target)
    with pytest.raises(IllegalTransition, match=f"{before} -> {target}"):
        machine.to(target)
    assert machine.state is before


@pytest.mark.parametrize("state", list(TaskState))
def test_task_state_knows_whether_it_is_terminal(state: TaskState) -> None:
    assert state.terminal is (state in {TaskState.DONE, TaskState.CANCELED, TaskState.FAILED})
    assert task_lifecycle(state).terminal is state.terminal


def test_pool_states_that_are_live_and_serving() -> None:
    assert {s for s in PoolState if s.live} == {S.STARTING, S.READY, S.DRAINING, S.STOPPING}
    assert {s for s in PoolState if s.serving} == {S.READY, S.DRAINING}
    assert set(POOL_TRANSITIONS) == set(PoolState)


def test_one_illegal_transition_class_names_the_kind() -> None:
    with pytest.raises(IllegalTransition, match="illegal task state transition done -> queued"):
        task_lifecycle(TaskState.DONE).to(TaskState.QUEUED)
    with pytest.raises(IllegalTransition, match=r"pool .* stopped -> ready \(from stopped: "):
        pool_lifecycle().to(PoolState.READY)
