"""JSON-lines logs: structured fields, human narration, secrets never written."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

from app.engine_host.mock import MockEngine, MockSpec
from app.logs import REDACTOR, JsonFormatter, Redactor, RotatingLogFile, setup_logging
from app.orchestrator.contracts import TaskRequest
from app.orchestrator.service import Orchestrator

FIELDS = {
    "job_id", "session_id", "engine", "engine_version", "pool_id", "replica_id",
    "queue_position", "predicted_start_ms", "tokens_in", "tokens_out", "correlation_id",
}  # fmt: skip


def test_redactor_scrubs_secrets_anywhere_in_the_line() -> None:
    r = Redactor(["s3cret-token-value"])
    r.add("")  # ignored
    r.add("abc")  # too short to be a secret worth scrubbing
    fmt = JsonFormatter(r)
    rec = logging.makeLogRecord(
        {"msg": "auth with s3cret-token-value", "fields": {"header": "Bearer s3cret-token-value"}}
    )
    line = fmt.format(rec)
    assert "s3cret-token-value" not in line
    assert json.loads(line)["header"] == "Bearer ***"


async def _task_log(tmp_path: Path, level: int, secret: str) -> tuple[str, list[dict[str, Any]]]:
    """Run one task with the log file at ``level``; return the file's text and the
    records of that task."""
    log_file = tmp_path / f"llama-orch-{level}.log"
    logger = logging.getLogger("llama_orch")
    before = (logger.level, logger.propagate, list(logger.handlers))
    setup_logging(log_file, stream=io.StringIO(), level=level)
    orch = Orchestrator([MockEngine(MockSpec("m0", tokens_per_s=0))])
    await orch.start()
    await asyncio.sleep(0.01)
    adm = orch.submit(
        TaskRequest(prompt=f"my key is {secret}", max_tokens=3, session_id="s1"),
        correlation_id="corr-1",
    )
    async for _ in orch.stream(str(adm.task_id)):
        pass
    await orch.shutdown()
    for handler in logging.getLogger("llama_orch").handlers:
        handler.flush()
    text = log_file.read_text()
    setup_logging(None, stream=None)
    logger.setLevel(before[0])  # leave the logger as the other tests expect it
    logger.propagate = before[1]
    for handler in before[2]:
        logger.addHandler(handler)
    records = [json.loads(line) for line in text.splitlines()]
    return text, [r for r in records if r.get("job_id") == str(adm.task_id)]


async def test_task_lifecycle_logs_are_json_lines_with_fields(tmp_path: Path) -> None:
    secret = "tok_" + "x" * 40
    REDACTOR.add(secret)
    text, task_records = await _task_log(tmp_path, logging.DEBUG, secret)
    assert secret not in text
    events = [r["event"] for r in task_records]
    assert events[0] == "admitted" and "dispatched" in events and events[-1] == "done"
    for r in task_records:
        assert r["human"] and r["correlation_id"] == "corr-1"
        assert set(r) >= FIELDS
    assert task_records[-1]["tokens_out"] == 3


async def test_a_task_writes_one_info_line_with_every_field(tmp_path: Path) -> None:
    _, task_records = await _task_log(tmp_path, logging.INFO, "tok_" + "y" * 40)
    assert [r["event"] for r in task_records] == ["done"]
    (line,) = task_records
    assert line["level"] == "info" and set(line) >= FIELDS and line["tokens_out"] == 3


class CountingFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def format(self, record: logging.LogRecord) -> str:
        self.calls += 1
        return super().format(record)


def test_the_log_file_formats_each_record_once_and_rotates_at_its_size(tmp_path: Path) -> None:
    path = tmp_path / "llama-orch.log"
    handler = RotatingLogFile(path, maxBytes=200, backupCount=2, encoding="utf-8")
    fmt = CountingFormatter()
    handler.setFormatter(fmt)
    logger = logging.getLogger("test.rotating")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for n in range(12):
            logger.warning("line %02d %s", n, "x" * 30)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert fmt.calls == 12
    kept = [path, path.with_name(path.name + ".1"), path.with_name(path.name + ".2")]
    assert all(p.exists() and p.stat().st_size <= 200 for p in kept)
    assert "line 11" in path.read_text() and not path.with_name(path.name + ".3").exists()
