"""Black-box checks of the core's hardening against a real ``llama-orch serve``:
stale config temporaries removed at start, deadlines, and a consistent account
for a client that cancels mid-stream."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import Served, serve

POOLS = """
[[pools]]
id = "fast"
engine = "mock"
model = "mock-fast"
device_mask = "0"
mock_tokens_per_s = 500

[[pools]]
id = "stuck"
engine = "mock"
model = "mock-stuck"
device_mask = "1"
mock_hang_after_tokens = 0
"""
STALE = ".config.toml.0123456789ab.tmp"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("hardening")
    stale = home / STALE
    stale.write_text("half a config written when the save was killed")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    return home


@pytest.fixture(scope="module")
def served(home: Path) -> Iterator[Served]:
    with serve(home, POOLS) as server:
        yield server


def _frames(served: Served, task_id: str) -> list[tuple[str, dict[str, object]]]:
    req = urllib.request.Request(
        f"{served.base}/v1/tasks/{task_id}/stream",
        headers={"Authorization": f"Bearer {served.token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read().decode()
    frames = []
    for block in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in lines:
            frames.append((lines["event"], json.loads(lines["data"])))
    return frames


def test_a_stale_config_temporary_is_gone_after_start(served: Served, home: Path) -> None:
    assert served.proc.poll() is None
    assert not (home / STALE).exists()
    assert (home / "config.toml").exists()


def test_a_deadline_passing_in_the_queue_ends_the_stream(served: Served) -> None:
    pin = {"mode": "pin", "pin_pool_id": "stuck"}
    status, blocker = served.call("POST", "/v1/tasks", {"prompt": "x", "placement": pin})
    assert status == 202, blocker
    body = {"prompt": "x", "placement": pin, "deadline_ms": 300}
    status, queued = served.call("POST", "/v1/tasks", body)
    assert status == 202, queued
    frames = _frames(served, queued["task_id"])
    assert [kind for kind, _ in frames] == ["error"]
    assert frames[0][1]["code"] == "DEADLINE_UNMET"
    assert served.wait_for_state(queued["task_id"], "failed")["error"]["code"] == "DEADLINE_UNMET"
    served.call("POST", f"/v1/tasks/{blocker['task_id']}/cancel")


def test_the_decisions_list_shows_admitted_tasks_with_rank_keys(served: Served) -> None:
    status, task = served.call("POST", "/v1/tasks", {"prompt": "x", "max_tokens": 1})
    assert status == 202, task
    status, decisions = served.call("GET", "/v1/placement/decisions?limit=5")
    assert status == 200 and task["task_id"] in [d["task_id"] for d in decisions]
    for record in decisions:
        assert record["outcome"] in ("admitted", "refused")
        for candidate in record["candidates"]:
            assert candidate["outcome"] in ("selected", "outranked", "filtered", "refused")
            assert candidate["filter"] is not None or candidate["rank"] is not None
