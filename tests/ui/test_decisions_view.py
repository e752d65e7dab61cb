"""DecisionsView: the table, the outcome filter and the candidate detail pane."""

from __future__ import annotations

import re
from typing import Any

import pytest
from PySide6.QtCore import Qt

from app.engine_host.mock import MockSpec
from app.orchestrator.contracts import (
    CandidateRecord,
    DecisionRecord,
    PlacementMode,
    Priority,
    TaskRequest,
)
from app.orchestrator.errors import OrchError
from app.orchestrator.service import Orchestrator, OrchestratorConfig
from app.orchestrator.tasks import prompt_start
from app.ui.backend_thread import BackendThread
from app.ui.decisions_view import MAX_ROWS, CandidateTableModel, DecisionsView
from app.ui.embedded_bridge import EmbeddedBridge
from app.ui.error_text import REFUSALS
from app.ui.main_window import MainWindow
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge, FakeControls
from tests.ui.support import mock_core


def decision(task_id: str, selected: str | None = "gpu1", **kw: Any) -> DecisionRecord:
    base: dict[str, Any] = dict(
        at=1_700_000_000.0, task_id=task_id, priority=Priority.INTERACTIVE,
        mode=PlacementMode.AUTO, selected_pool_id=selected,
        outcome="admitted" if selected else "refused", pool_id=selected,
        refusal_code=None if selected else "POOL_UNAVAILABLE",
        refusal_reason=None if selected else "no_feasible_pool",
        deciding_key="most_free_vram",
        no_capacity_reason=None if selected else "no_feasible_pool",
        candidates_considered=3, filters_applied=["device_mask"],
        tie_breakers_applied=["most_free_vram"], pinned=False, fallback_used=False,
        summary=f"{selected}: most free VRAM (20.0 GiB); gpu0 skipped: device mask",
        candidates=[
            CandidateRecord(pool_id="gpu0", outcome="filtered", filter="device_mask",
                            reason="device mask 0 does not match the required mask 1"),
            CandidateRecord(pool_id="gpu2", outcome="outranked", predicted_end_ms=812.0,
                            reason="free VRAM is lower", rank_key="most_free_vram", rank=1),
            CandidateRecord(pool_id="gpu1", outcome="selected", predicted_end_ms=640.0,
                            reason="most free VRAM (20.0 GiB)", rank_key="most_free_vram",
                            rank=0),
        ],
    )  # fmt: skip
    base.update(kw)
    return DecisionRecord(**base)


def make_view(qtbot: Any, records: list[DecisionRecord]) -> tuple[DecisionsView, FakeBridge]:
    bridge = FakeBridge()
    bridge.decision_list = records
    view = DecisionsView(bridge)
    qtbot.addWidget(view)
    return view, bridge


def test_lists_initial_decisions_and_new_ones_on_top(qtbot: Any) -> None:
    view, bridge = make_view(qtbot, [decision("bbbbbbbb-2"), decision("aaaaaaaa-1")])
    bridge.decisionsMade.emit((decision("cccccccc-3", selected=None, candidates=[]),))
    assert view.visible_task_ids() == ["cccccccc-3", "bbbbbbbb-2", "aaaaaaaa-1"]
    assert view.model.data(view.model.index(0, 2)) == "Refused: " + REFUSALS["no_feasible_pool"]
    assert view.model.data(view.model.index(1, 2)) == "gpu1"
    assert view.model.data(view.model.index(1, 1)) == "bbbbbbbb"


def test_detail_lists_every_candidate_with_its_reason(qtbot: Any) -> None:
    view, _ = make_view(qtbot, [decision("task-1")])
    assert view.select_task("task-1")
    model = view.candidates
    rows = [[model.cell(r, c) for c in range(5)] for r in range(model.rowCount())]
    # the rank key column comes from the rank_key field, not from the reason text
    assert rows == [
        ["gpu1", "selected", "most_free_vram", "most free VRAM (20.0 GiB)", "640 ms"],
        ["gpu2", "outranked", "most_free_vram", "free VRAM is lower", "812 ms"],
        ["gpu0", "filtered", "device_mask",
         "device mask 0 does not match the required mask 1", ""],
    ]  # fmt: skip
    heading = view.detail_title.text()
    assert "gpu0 skipped: device mask" in heading
    assert "Filters applied: device_mask" in heading
    assert "Tie-breakers applied: most_free_vram" in heading
    assert "Decided by: most_free_vram" in heading


def test_a_queue_full_refusal_shows_as_refused_not_selected(qtbot: Any) -> None:
    refused = decision(
        "task-9", outcome="refused", pool_id=None, refusal_code="ADMISSION_REJECT",
        refusal_reason="queue_full", deciding_key=None,
        candidates=[
            CandidateRecord(pool_id="gpu1", outcome="refused", reason="queue full", rank=0)
        ],
    )  # fmt: skip
    view, _ = make_view(qtbot, [refused, decision("task-8")])
    assert view.model.data(view.model.index(0, 2)) == (
        "Refused: The queue of pool gpu1 was full: send it again when the queue is shorter."
    )
    view.set_outcome_filter("refused")
    assert view.visible_task_ids() == ["task-9"]
    assert view.select_task("task-9")
    assert view.candidates.cell(0, 1) == "refused"
    assert "ADMISSION_REJECT" not in view.detail_title.text()
    assert not view.details_button.isHidden() and view.details.isHidden()
    view.details_button.click()
    assert view.details.text().startswith("ADMISSION_REJECT: queue_full\n")


def test_outcome_filter_keeps_matching_decisions(qtbot: Any) -> None:
    records = [decision("t3"), decision("t2", selected=None, candidates=[]), decision("t1")]
    view, bridge = make_view(qtbot, records)
    view.set_outcome_filter("refused")
    assert view.visible_task_ids() == ["t2"]
    bridge.decisionsMade.emit((decision("t4"),))
    bridge.decisionsMade.emit((decision("t5", selected=None, candidates=[]),))
    assert view.visible_task_ids() == ["t5", "t2"]
    view.set_outcome_filter("admitted")
    assert view.visible_task_ids() == ["t4", "t3", "t1"]
    view.set_outcome_filter("all")
    assert view.visible_task_ids() == ["t5", "t4", "t3", "t2", "t1"]


def test_filtered_out_decision_cannot_be_selected(qtbot: Any) -> None:
    view, _ = make_view(qtbot, [decision("t1"), decision("t2", selected=None, candidates=[])])
    view.set_outcome_filter("admitted")
    assert not view.select_task("t2")
    assert view.select_task("t1")
    assert view.selected_record() is not None
    assert view.selected_record().task_id == "t1"  # type: ignore[union-attr]


def test_table_is_bounded(qtbot: Any) -> None:
    view, bridge = make_view(qtbot, [])
    for i in range(MAX_ROWS + 25):
        bridge.decisionsMade.emit((decision(f"task-{i}", candidates=[]),))
    assert view.model.rowCount() == MAX_ROWS
    ids = view.visible_task_ids()
    assert ids[0] == f"task-{MAX_ROWS + 24}"
    assert ids[-1] == "task-25"


def test_rows_name_the_chat_or_the_prompt(qtbot: Any, qloop: Any) -> None:
    long = TaskRequest(prompt="Explain   the placement\npolicy " + "in detail " * 20)
    assert prompt_start(long).startswith("Explain the placement policy in detail")
    assert len(prompt_start(long)) <= 60 and prompt_start(long).endswith("…")

    view, bridge = make_view(qtbot, [decision("api-task-1")])
    view.model.set_label("api-task-1", "Summarise this log file")
    assert view.model.data(view.model.index(0, 1)) == "Summarise this log file"
    header = view.table.horizontalHeader()
    assert header.sectionResizeMode(1).name == "Stretch"  # the prompt gets the width

    window = MainWindow(bridge, tray_available=lambda: False)
    qtbot.addWidget(window)
    conv = window.chat.current()
    conv.prompt.setPlainText("Which GPU should run a 7B model?")
    conv.send_button.click()
    qloop.sleep(0.01)  # the submit runs on the loop
    task_id = str(bridge.submitted[0].task_id)
    bridge.decisionsMade.emit((decision(task_id),))
    model = window.decisions.model
    assert model.data(model.index(0, 1)) == "Chat: Which GPU should run a 7B model?"


def test_a_vram_filtered_candidate_is_written_from_its_byte_fields(qtbot: Any) -> None:
    gib = 1024**3
    vram = CandidateRecord(
        pool_id="gpu1", outcome="filtered", filter="vram",
        reason="(text the view does not read)",
        vram_need_bytes=int(9.4 * gib), vram_free_bytes=int(7.8 * gib),
    )  # fmt: skip
    model = CandidateTableModel()
    model.set_candidates([vram])
    row = [model.cell(0, c) for c in range(4)]
    assert row == ["gpu1", "filtered", "vram", "needs 9.4 GiB, 7.8 GiB free"]


# every refusal_reason the core writes: guardrail limits, queue and deadline refusals,
# and placement's no-capacity reasons
CORE_REASONS = [
    "ctx", "turns", "tokens_budget", "time_budget", "cost_budget",
    "queue_full", "deadline_unmet",
    "no_feasible_pool", "pinned_pool_infeasible", "no_preferred_feasible",
]  # fmt: skip


def test_every_no_capacity_reason_of_placement_is_in_the_list() -> None:
    from app.orchestrator import placement

    assert set(placement._NO_CAPACITY_TEXT) <= set(CORE_REASONS)


@pytest.mark.parametrize("reason", [*CORE_REASONS, "a_future_reason"])
@pytest.mark.parametrize("code", ["ADMISSION_REJECT", "POOL_UNAVAILABLE"])
def test_a_refusal_shows_a_plain_sentence_and_keeps_the_code_in_details(
    qtbot: Any, reason: str, code: str
) -> None:
    refused = decision(
        "task-r", selected=None, refusal_code=code, refusal_reason=reason, candidates=[],
        summary="refused: no pool: check GET /v1/pools and the placement overrides",
    )  # fmt: skip
    view, _ = make_view(qtbot, [refused])
    cell = view.model.data(view.model.index(0, 2))
    assert cell.startswith("Refused: ") and cell.endswith(".")
    sentence = cell.removeprefix("Refused: ")
    assert sentence[0].isupper() and "{" not in sentence
    assert not re.search(r"\b[A-Za-z]+_[A-Za-z_]+\b", cell), cell  # no raw code or reason
    if reason in REFUSALS:
        assert sentence == REFUSALS[reason].replace("{pool}", "the pool")
    tip = view.model.data(view.model.index(0, 2), Qt.ItemDataRole.ToolTipRole)
    assert f"{code}: {reason}" in tip
    assert view.select_task("task-r")
    view.details_button.click()
    assert view.details.text().startswith(f"{code}: {reason}\n")
    assert "GET /v1/pools" in view.details.text() and not view.details.isHidden()
    assert "GET /" not in view.detail_title.text() and code not in view.detail_title.text()


start_core = mock_core(
    MockSpec("mock0", ctx=128, tokens_per_s=0), config=OrchestratorConfig(session_max_turns=1)
)


def test_refusals_of_the_real_core_are_listed_with_their_sentence(
    qtbot: Any, qloop: QtAsync
) -> None:
    thread: BackendThread[Orchestrator] = BackendThread(start_core)
    orch = thread.start(timeout=20)
    bridge = EmbeddedBridge(orch, FakeControls(), thread)
    try:
        qloop.wait_until(lambda: all(p.ready for p in bridge.pools()))
        view = DecisionsView(bridge)
        qtbot.addWidget(view)

        async def submit(req: TaskRequest) -> str:
            try:
                await bridge.submit(req)
            except OrchError as exc:
                return exc.code
            return "admitted"

        pinned = {"mode": "pin", "pin_pool_id": "mock0"}
        pin_paused = TaskRequest(prompt="x", max_tokens=4, placement=pinned)
        assert qloop.run(submit(TaskRequest(prompt="x" * 400, max_tokens=100))) == (
            "ADMISSION_REJECT"
        )
        assert qloop.run(submit(TaskRequest(prompt="hi", max_tokens=4, session_id="s"))) == (
            "admitted"
        )
        qloop.wait_until(lambda: [t.state for t in bridge.tasks(1)] == ["done"])
        assert qloop.run(submit(TaskRequest(prompt="hi", max_tokens=4, session_id="s"))) == (
            "ADMISSION_REJECT"
        )
        qloop.run(bridge.drain("mock0"))
        qloop.wait_until(lambda: all(p.draining for p in bridge.pools()))
        assert qloop.run(submit(pin_paused)) == "POOL_UNAVAILABLE"
        qloop.wait_until(lambda: view.model.rowCount() == 4)
        cells = [view.model.data(view.model.index(r, 2)) for r in range(4)]
        assert cells == [
            "Refused: " + REFUSALS["pinned_pool_infeasible"],
            "Refused: " + REFUSALS["turns"],
            "mock0",
            "Refused: " + REFUSALS["ctx"],
        ]
        labels = [view.model.data(view.model.index(r, 1)) for r in range(4)]
        assert labels[3] == "x" * 59 + "…"  # a refused task's row names its prompt too
    finally:
        bridge.close()
        thread.stop(timeout=20)
