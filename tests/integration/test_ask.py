"""``llama-orch ask`` as users run it: a subprocess against ``llama-orch serve`` on loopback."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.engine_host.mock import mock_token
from tests.integration.support import ROOT, Served, clean_env, free_port, serve

POOLS = """
[admission]
queue_capacity = 1

[engines]
decode_timeout_s = 600

[[pools]]
id = "m0"
engine = "mock"
model = "mock-a"
device_mask = "0"
mock_tokens_per_s = 400

[[pools]]
id = "slow"
engine = "mock"
model = "mock-slow"
device_mask = "1"
mock_tokens_per_s = 40

[[pools]]
id = "stuck"
engine = "mock"
model = "mock-stuck"
device_mask = "2"
mock_hang_after_tokens = 0
"""
SUMMARY = re.compile(r"\[pool (\S+) · TTFT \d+ ms · (\d+) tokens in [\d.]+ s · [\d.]+ tokens/s\]")
TASK_ID = re.compile(r"task ([0-9a-f-]{36}) admitted to pool ([^\s:]+)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("ask"), POOLS) as served:
        yield served


def ask(
    served: Served, *args: str, token: str | None = None, pipe_stdin: bool = False
) -> subprocess.Popen[str]:
    """Start ``llama-orch ask`` for ``served`` (URL from LLAMA_ORCH_URL, token from AUTH_TOKEN)."""
    env = clean_env(Path(ROOT), LLAMA_ORCH_URL=served.base, AUTH_TOKEN=token or served.token)
    return subprocess.Popen(
        [sys.executable, "-m", "app", "ask", *args],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], stdin: str | None = None) -> tuple[int, str, str]:
    out, err = proc.communicate(stdin, timeout=60)
    return proc.returncode, out, err


def words(seed: int, key: str, count: int) -> str:
    return "".join(mock_token(seed, key, i) for i in range(count))


def test_ask_streams_the_answer_and_a_summary(server: Served) -> None:
    code, out, err = finish(ask(server, "--seed", "3", "--max-tokens", "6", "hi"))
    assert code == 0, err
    assert out == words(3, "user:hi", 6) + "\n"
    match = SUMMARY.search(err)
    assert match and match.groups() == ("m0", "6"), err
    found = TASK_ID.search(err)
    assert found, err
    view = server.task(found.group(1))
    assert (view["state"], view["pool_id"], view["tokens_out"]) == ("done", "m0", 6)


def test_ask_reads_stdin_and_the_token_file(server: Served, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(server.token + "\n")
    args = ("--token-file", str(token_file), "--raw", "--prefer", "slow", "--priority", "batch")
    proc = ask(server, *args, "--seed", "2", "--max-tokens", "4", "-", token="x", pipe_stdin=True)
    code, out, err = finish(proc, "hello")
    assert code == 0, err
    assert out == words(2, "hello", 4) + "\n"
    found = TASK_ID.search(err)
    assert found and found.group(2) == "slow", err
    assert server.task(found.group(1))["priority"] == "batch"


def test_ask_shows_the_queue_position_while_waiting(server: Served) -> None:
    first = ask(server, "--pool", "slow", "--max-tokens", "2000", "first")
    assert first.stderr is not None and "admitted" in first.stderr.readline()
    second = ask(server, "--pool", "slow", "--max-tokens", "2", "second")
    assert second.stderr is not None
    seen = ""
    while (line := second.stderr.readline()) and "queue position" not in line:
        seen += line
    first.send_signal(signal.SIGINT)  # the second starts once the first is canceled
    assert finish(first)[0] == 130
    code, out, err = finish(second)
    assert code == 0 and len(out.split()) == 2, seen + line + err
    position = re.search(r"queue position (\d+), predicted start in (\d+) ms", line)
    assert position and int(position.group(2)) > 0, seen + line + err


def test_ctrl_c_cancels_the_task_on_the_server(server: Served) -> None:
    proc = ask(server, "--pool", "slow", "--max-tokens", "2000", "a long answer")
    assert proc.stdout is not None
    assert proc.stdout.read(1)  # the first token arrived
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130, err
    assert "canceled on the server" in err
    found = TASK_ID.search(err)
    assert found, err
    view = server.task(found.group(1))
    assert view["state"] == "canceled" and view["tokens_out"] < 2000


def test_exit_codes(server: Served) -> None:
    fillers = []
    for _ in range(2):
        status, admission = server.call(
            "POST", "/v1/tasks", {"prompt": "fill", "model_ref": "mock-stuck", "max_tokens": 5}
        )
        assert status == 202, admission
        fillers.append(admission["task_id"])
    unreachable = f"http://127.0.0.1:{free_port()}"
    runs = {
        "invalid": ask(server, "--max-tokens", "999999", "x"),
        "empty": ask(server, "   "),
        "auth": ask(server, "x", token="wrong-token"),
        "rejected": ask(server, "--pool", "stuck", "--retry", "1", "x"),
        "unknown pool": ask(server, "--pool", "nope", "x"),  # 400 INVALID_PARAMS
        "unreachable": ask(server, "--url", unreachable, "x"),
    }
    try:
        results = {name: finish(proc) for name, proc in runs.items()}
    finally:
        for task_id in fillers:
            server.call("POST", f"/v1/tasks/{task_id}/cancel")
    codes = {name: code for name, (code, _, _) in results.items()}
    assert codes == {
        "invalid": 2, "empty": 2, "auth": 3, "rejected": 4, "unknown pool": 2, "unreachable": 1,
    }, {name: err for name, (_, _, err) in results.items()}  # fmt: skip
    assert "retrying" in results["rejected"][2] and "429" in results["rejected"][2]
    assert "BAD_TOKEN" in results["auth"][2]
    assert "max_tokens" in results["invalid"][2]
    for _, out, err in results.values():
        assert out == "" and "Traceback" not in err
