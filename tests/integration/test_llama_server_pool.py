"""``llama-orch serve`` with the demo model on llama.cpp's llama-server (CPU): it
streams through the orchestrator, shows the configured slots, re-exports the
engine's metrics, serves the engine's log, and survives a kill -9 of the engine."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.engine_host.demo_model import write_demo_model
from tests.integration.support import Served, serve

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("home")
    model = write_demo_model(home / "demo.gguf")
    pools = (
        f'[[pools]]\nid = "demo"\nengine = "llamacpp"\nmodel = "file:{model}"\n'
        'device_mask = "cpu"\ndemo = true\nslots = 4\nctx = 4096\n'
    )
    with serve(home, pools) as server:
        yield server


def submit(served: Served, max_tokens: int, seed: int = 7) -> str:
    body = {"prompt": "Hello", "max_tokens": max_tokens, "seed": seed, "temperature": 0.8}
    status, admission = served.call("POST", "/v1/tasks", body)
    assert status == 202, admission
    return str(admission["task_id"])


def events(served: Served, task_id: str) -> Iterator[tuple[str, dict[str, object]]]:
    """Yield the task's SSE events as (event, data) while reading its stream."""
    req = urllib.request.Request(
        f"{served.base}/v1/tasks/{task_id}/stream",
        headers={"Authorization": f"Bearer {served.token}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        name = ""
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                yield name, json.loads(line[6:])


def engine_pid(served: Served) -> int:
    """The pid of the llama-server process the orchestrator started."""
    found = llama_server_children(served)
    assert found, "no llama-server child of the orchestrator"
    return found[0]


def llama_server_children(served: Served) -> list[int]:
    """The pids of the live llama-server processes the orchestrator started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat.split("(", 1)[1].rsplit(")", 1)
        state, ppid = rest.split()[:2]
        if name == "llama-server" and int(ppid) == served.proc.pid and state != "Z":
            found.append(int(entry.name))
    return found


def test_pool_shows_the_configured_slots_on_llama_server(served: Served) -> None:
    status, pools = served.call("GET", "/v1/pools")
    assert status == 200
    (pool,) = pools
    assert pool["slots_total"] == 4
    assert pool["engine_version"].startswith("llama-server ")
    assert pool["ready"] is True


def test_the_demo_model_streams_through_the_orchestrator(served: Served) -> None:
    got = list(events(served, submit(served, 12)))
    kinds = [kind for kind, _ in got]
    assert kinds[0] == "started" and kinds[-1] == "end"
    tokens = [data["t"] for kind, data in got if kind == "token"]
    assert len(tokens) == 12
    again = [data["t"] for kind, data in events(served, submit(served, 12)) if kind == "token"]
    assert again == tokens  # same seed and prompt, same text


def session_turn(served: Served, prompt: str, session_id: str) -> tuple[str, list[bool]]:
    """Run one turn of ``session_id``; return its text and the kv_warmth of its metrics."""
    body = {"prompt": prompt, "max_tokens": 16, "seed": 3, "session_id": session_id}
    status, admission = served.call("POST", "/v1/tasks", body)
    assert status == 202, admission
    text, warmth = "", []
    for name, data in events(served, str(admission["task_id"])):
        if name == "token":
            text += str(data["t"])
        elif name == "metrics":
            warmth.append(bool(data["kv_warmth"]))
    return text, warmth


def test_a_sessions_second_turn_reports_a_warm_kv_cache_in_its_stream(served: Served) -> None:
    words = "the slot keeps the prompt of this chat in its cache " * 30
    first, warmth_1 = session_turn(served, "Chat 41: " + words, "kv-e2e")
    _, warmth_2 = session_turn(served, "Chat 41: " + words + first + " and", "kv-e2e")
    assert warmth_1 and warmth_1[-1] is False  # the engine's own count: nothing cached
    assert warmth_2 and warmth_2[-1] is True


def test_engine_metrics_and_log_are_served(served: Served) -> None:
    req = urllib.request.Request(
        f"{served.base}/metrics", headers={"Authorization": f"Bearer {served.token}"}
    )
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
        lines = [ln for ln in text.splitlines() if ln.startswith("llamacpp:tokens_predicted_total")]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert lines and 'pool_id="demo"' in lines[0], text[-2000:]

    status, log = served.call("GET", "/v1/pools/demo/log?tail=5")
    assert status == 200, log
    assert log["pool_id"] == "demo"
    assert str(log["log_file"]).endswith("demo.log")
    assert len(log["lines"]) == 5
    status, _ = served.call("GET", "/v1/pools/demo/log?tail=0")
    assert status == 400
    status, _ = served.call("GET", "/v1/pools/ghost/log")
    assert status == 404


def test_kill_9_of_the_engine_mid_stream_resets_the_task_and_restarts(served: Served) -> None:
    pid = engine_pid(served)
    # the longest answer a slot holds (the demo model trains on 4096 tokens): it is
    # still decoding when the kill lands, even on a busy machine
    stream = events(served, submit(served, 4000))
    for kind, _ in stream:
        if kind == "token":
            break
    os.kill(pid, signal.SIGKILL)
    rest = list(stream)
    errors = [data for kind, data in rest if kind == "error"]
    assert errors and errors[0]["code"] == "WORKER_RESET", rest[-3:]
    deadline = time.monotonic() + 60
    restarted = None
    while time.monotonic() < deadline:  # a new engine, and the pool ready on it
        _, pools = served.call("GET", "/v1/pools")
        restarted = next(iter(llama_server_children(served)), None)
        if pools[0]["ready"] and restarted not in (None, pid):
            break
        time.sleep(0.2)
    assert pools[0]["ready"], pools
    assert restarted not in (None, pid)
    assert [k for k, _ in events(served, submit(served, 4))][-1] == "end"
