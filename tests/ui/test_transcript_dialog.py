"""Tasks view: a finished task's transcript opens read-only, read through the bridge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.engine_host.artifacts import ArtifactStore
from app.orchestrator.artifacts_port import ArtifactIn, StoredArtifact
from app.orchestrator.errors import OrchError
from app.orchestrator.service import Orchestrator
from app.ui.backend_thread import BackendThread
from app.ui.embedded_bridge import EmbeddedBridge
from app.ui.tasks_view import TasksView
from tests.ui.conftest import QtAsync
from tests.ui.fakes import FakeBridge, FakeControls
from tests.ui.test_embedded_bridge import start_core
from tests.ui.test_tasks_view import LogControls, task

ART_ID = "ab" * 32
TRANSCRIPT = (
    'event: started\ndata: {"pool_id":"gpu0"}\n\n'
    'event: token\ndata: {"t":"Silent","i":0}\n\n'
    'event: end\ndata: {"finish_reason":"canceled"}\n\n'
)


def artifact() -> StoredArtifact:
    content = {"task_id": "done-1", "transcript": TRANSCRIPT, "truncated": False,
               "decision": {"task_id": "done-1", "chosen": "gpu0"}}  # fmt: skip
    return StoredArtifact(id=ART_ID, digest=f"sha256:{ART_ID}", created_ms=1, kind="trace",
                          content=content, tags=["task-transcript"], parent=None,
                          metadata={})  # fmt: skip


def make_view(qtbot: Any, tmp_path: Path) -> tuple[TasksView, FakeBridge]:
    bridge = FakeBridge(LogControls(tmp_path / "app.log"))
    bridge.task_list = [task("live-1", created=2.0),
                        task("done-1", "done", created=1.0, artifact_id=ART_ID)]  # fmt: skip
    bridge.artifacts[ART_ID] = artifact()
    view = TasksView(bridge)
    qtbot.addWidget(view)
    return view, bridge


def test_show_transcript_opens_it_read_only(qtbot: Any, qloop: QtAsync, tmp_path: Path) -> None:
    view, bridge = make_view(qtbot, tmp_path)
    assert view.select_task("live-1")
    assert not view.transcript_button.isEnabled() and not view.transcript_action.isEnabled()
    view.show_transcript()
    assert view.select_task("done-1")
    assert view.transcript_action in view.table.actions()
    assert view.transcript_action.isEnabled()
    view.transcript_action.trigger()
    qloop.wait_until(lambda: view.transcript_dialog is not None)
    dialog = view.transcript_dialog
    assert dialog is not None and dialog.isVisible()
    assert bridge.commands == [("artifact", ART_ID)]
    assert dialog.transcript.isReadOnly() and dialog.transcript.toPlainText() == TRANSCRIPT
    assert '"chosen": "gpu0"' in dialog.decision.toPlainText()
    dialog.grab().save(str(tmp_path / "transcript.png"))


def test_a_missing_artifact_is_reported(qtbot: Any, qloop: QtAsync, tmp_path: Path) -> None:
    view, bridge = make_view(qtbot, tmp_path)
    bridge.artifacts.clear()
    errors: list[str] = []
    bridge.errorRaised.connect(errors.append)
    assert view.select_task("done-1")
    view.transcript_button.click()
    qloop.wait_until(lambda: errors)
    assert errors == [f"show transcript failed: no artifact {ART_ID}"]
    assert view.transcript_dialog is None


class StoreControls(FakeControls):
    def __init__(self, store: ArtifactStore) -> None:
        super().__init__()
        self.store = store

    def artifact_registry(self) -> ArtifactStore:
        return self.store


def test_the_embedded_bridge_reads_the_backend_store(qloop: QtAsync, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    ref = qloop.run(store.put(ArtifactIn(kind="trace", content={"transcript": TRANSCRIPT})))
    thread: BackendThread[Orchestrator] = BackendThread(start_core)
    orch = thread.start(timeout=20)
    try:
        with_store = EmbeddedBridge(orch, StoreControls(store), thread)
        assert qloop.run(with_store.artifact(ref.id)).content["transcript"] == TRANSCRIPT
        without = EmbeddedBridge(orch, FakeControls(), thread)
        with pytest.raises(OrchError) as err:
            qloop.run(without.artifact(ref.id))
        assert str(err.value.message) == "this app keeps no task transcripts"
        with_store.close()
        without.close()
    finally:
        thread.stop(timeout=20)
