"""TasksView: coalesced task list, cancel, and the filterable log tail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QTabWidget, QWidget

from app.orchestrator.contracts import Priority, TaskView
from app.ui.log_tail import LogTailer, parse_line
from app.ui.tasks_view import FLUSH_MS, TasksView
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge, FakeControls


def task(task_id: str, state: str = "streaming", created: float = 1_700_000_000.0,
         **kw: Any) -> TaskView:  # fmt: skip
    base: dict[str, Any] = dict(
        task_id=task_id, state=state, priority=Priority.INTERACTIVE, pool_id="gpu0",
        session_id=None, identity="gui", correlation_id=f"corr-{task_id}", created_at=created,
        queue_position=None, queued_ms=3, ttft_ms=42, decode_time_ms=None, tokens_in=5,
        tokens_out=7, finish_reason=None, error=None, decision_summary="gpu0: only candidate",
    )  # fmt: skip
    base.update(kw)
    return TaskView(**base)


class LogControls(FakeControls):
    def __init__(self, log_file: Path) -> None:
        super().__init__()
        self.log_file = log_file

    def log_path(self) -> str:
        return str(self.log_file)


def log_line(message: str, job_id: str | None = None, corr: str | None = None) -> str:
    data: dict[str, Any] = {"ts": 1_700_000_000.5, "level": "info", "logger": "llama_orch",
                            "event": "x", "human": message}  # fmt: skip
    if job_id:
        data["job_id"] = job_id
    if corr:
        data["correlation_id"] = corr
    return json.dumps(data) + "\n"


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "llama-orch.log"
    path.write_text(
        log_line("admitted", "aaaa1111-task", "corr-a")
        + log_line("server started")
        + log_line("admitted", "bbbb2222-task", "corr-b")
        + log_line("first token", "aaaa1111-task", "corr-a")
    )
    return path


def make_view(qtbot: Any, log_file: Path, tasks: list[TaskView]) -> tuple[TasksView, FakeBridge]:
    bridge = FakeBridge(LogControls(log_file))
    bridge.task_list = tasks
    view = TasksView(bridge)
    qtbot.addWidget(view)
    return view, bridge


def test_lists_tasks_newest_first_with_client_identity(qtbot: Any, log_file: Path) -> None:
    tasks = [
        task("old-task", "done", created=10.0, identity="lan:192.168.1.7", api="openai"),
        task("new-task", "queued", created=20.0, queue_position=1, ttft_ms=None),
    ]
    view, _ = make_view(qtbot, log_file, tasks)
    assert view.model.task_ids() == ["new-task", "old-task"]
    row = [view.model.cell(1, c) for c in range(5)]
    assert row == ["old-task", "done", "gpu0", "lan:192.168.1.7", "openai"]
    assert view.model.cell(0, 6) == ""
    assert view.model.cell(1, 6) == "42 ms"
    assert view.count_label.text().startswith("1 live")


def test_task_changes_are_coalesced(qtbot: Any, log_file: Path) -> None:
    view, _ = make_view(qtbot, log_file, [])
    inserts: list[int] = []
    view.model.rowsInserted.connect(lambda *_: inserts.append(1))
    for i in range(50):
        view.bridge.tasksChanged.emit((task("t1", "streaming", tokens_out=i),))
    assert view.model.rowCount() == 0  # nothing applied per event
    qtbot.waitUntil(lambda: view.model.rowCount() == 1, timeout=2000)
    assert view.model.cell(0, 5) == "49"
    assert len(inserts) == 1


def test_a_hidden_view_leaves_its_table_alone_and_catches_up_once_shown(
    qtbot: Any, log_file: Path
) -> None:
    view, _ = make_view(qtbot, log_file, [task("t0", tokens_out=1)])
    tabs = QTabWidget()
    qtbot.addWidget(tabs)
    tabs.addTab(view, "Tasks")
    tabs.addTab(QWidget(), "Chat")
    tabs.show()
    tabs.setCurrentIndex(1)  # the tasks tab is hidden now
    changes: list[int] = []
    view.model.dataChanged.connect(lambda *_: changes.append(1))
    view.model.rowsInserted.connect(lambda *_: changes.append(1))
    for i in range(20):
        view.bridge.tasksChanged.emit((task("t0", tokens_out=i), task("t1", created=2e9)))
    qtbot.wait(int(FLUSH_MS * 2.5))  # two flush periods
    assert changes == []
    assert view.model.task_ids() == ["t0"]
    tabs.setCurrentIndex(0)
    assert view.model.task_ids() == ["t1", "t0"]  # applied at once, in one pass
    assert view.model.cell(1, 5) == "19"
    assert len(changes) == 2  # one insert, one update


def test_sample_refreshes_from_the_bridge(qtbot: Any, log_file: Path) -> None:
    view, bridge = make_view(qtbot, log_file, [task("t1", tokens_out=1)])
    bridge.task_list = [task("t1", tokens_out=64), task("lan-1", created=2e9, identity="lan")]
    bridge.sampled.emit(object())
    view.flush()
    assert view.model.task_ids() == ["lan-1", "t1"]
    assert view.model.cell(1, 5) == "64"


def test_cancel_sends_cancel_for_a_live_task_only(
    qtbot: Any, qloop: QtAsync, log_file: Path
) -> None:
    view, bridge = make_view(qtbot, log_file, [task("live-1", created=2.0),
                                                task("done-1", "done", created=1.0)])  # fmt: skip
    assert view.select_task("done-1")
    assert not view.cancel_button.isEnabled()
    view.cancel_selected()
    assert view.select_task("live-1")
    assert view.cancel_button.isEnabled()
    view.cancel_button.click()
    assert bridge.commands == [("cancel", "live-1")]


def test_selecting_a_task_filters_the_log(qtbot: Any, qloop: QtAsync, log_file: Path) -> None:
    view, _ = make_view(qtbot, log_file, [task("aaaa1111-task"), task("bbbb2222-task")])
    assert qloop.run(view.log_tail.refresh()) == 4
    assert len(view.log_tail.shown_lines()) == 4
    view.select_task("bbbb2222-task")
    assert view.log_tail.filter_edit.text() == "bbbb2222-task"
    shown = view.log_tail.shown_lines()
    assert len(shown) == 1
    assert shown[0].endswith("INFO    admitted [bbbb2222 corr-b]")
    view.log_tail.set_filter("corr-a")
    assert [s.split(" ", 1)[1] for s in view.log_tail.shown_lines()] == [
        "INFO    admitted [aaaa1111 corr-a]",
        "INFO    first token [aaaa1111 corr-a]",
    ]
    with log_file.open("a") as handle:
        handle.write(log_line("done", "aaaa1111-task", "corr-a") + log_line("other", "zz"))
    assert qloop.run(view.log_tail.refresh()) == 2
    assert len(view.log_tail.shown_lines()) == 3
    view.log_tail.set_filter("")
    assert len(view.log_tail.shown_lines()) == 6


def test_tailer_follows_appends_partial_lines_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    tailer = LogTailer(path)
    assert tailer.read_new() == []  # missing file
    path.write_text('{"human": "one"}\n{"human": "tw')
    assert tailer.read_new() == ['{"human": "one"}']
    with path.open("a") as handle:
        handle.write('o"}\n')
    assert tailer.read_new() == ['{"human": "two"}']
    path.unlink()
    path.write_text('{"human": "after rotation"}\n')
    assert tailer.read_new() == ['{"human": "after rotation"}']


def test_tailer_reads_only_the_end_of_a_big_file(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f'{{"human": "line {i}"}}\n' for i in range(1000)))
    lines = LogTailer(path, first_read_bytes=200).read_new()
    assert 0 < len(lines) < 20
    assert lines[-1] == '{"human": "line 999"}'
    assert all(line.startswith("{") for line in lines)


def test_non_json_lines_are_kept_verbatim() -> None:
    entry = parse_line("Traceback (most recent call last):")
    assert entry.message == "Traceback (most recent call last):"
    assert not entry.matches("abc")
    assert entry.matches("")
