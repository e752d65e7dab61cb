"""Engine processes: own session, logs, terminate/kill with reaping, parent-death signal."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.engine_host import process
from tests.engine_host.support import alive

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(600)",
]


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def log_has(path: Path, text: str) -> bool:
    return text in log_text(path)


async def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``check`` until it is true or ``timeout_s`` passed; return its last value."""
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


async def wait_for_log(path: Path, text: str) -> None:
    assert await eventually(lambda: log_has(path, text)), f"{text!r} never appeared in {path}"


async def test_spawn_appends_output_to_the_log_in_a_new_session(tmp_path: Path) -> None:
    log = tmp_path / "pool.log"
    log.write_text("earlier run\n")
    proc = await process.spawn(
        [sys.executable, "-c", "import os, sys; print('out'); print('err', file=sys.stderr)"],
        log_path=log,
        env={**os.environ, "X": "1"},
    )
    assert await proc.wait() == 0
    text = log_text(log)
    assert text.startswith("earlier run\n")
    assert "out" in text
    assert "err" in text

    proc = await process.spawn(SLEEPER, log_path=log)
    try:
        assert os.getsid(proc.pid) == proc.pid
        assert os.getpgid(proc.pid) == proc.pid
    finally:
        await process.kill(proc)


async def test_terminate_uses_sigterm_first(tmp_path: Path) -> None:
    proc = await process.spawn(SLEEPER, log_path=tmp_path / "a.log")
    await wait_for_log(tmp_path / "a.log", "up")
    started = time.monotonic()
    code = await process.terminate(proc, grace_s=5.0)
    assert code == -signal.SIGTERM
    assert time.monotonic() - started < 2.0
    assert not alive(proc.pid)


async def test_terminate_kills_what_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    proc = await process.spawn(STUBBORN, log_path=tmp_path / "b.log")
    await wait_for_log(tmp_path / "b.log", "up")
    started = time.monotonic()
    code = await process.terminate(proc, grace_s=0.3)
    assert code == -signal.SIGKILL
    assert 0.3 <= time.monotonic() - started < 3.0
    assert not alive(proc.pid)
    assert await process.terminate(proc, grace_s=0.1) == code


async def test_terminate_reaches_the_whole_process_group(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print("grandchild", child.pid, flush=True)
        time.sleep(600)
        """
    )
    proc = await process.spawn([sys.executable, "-c", script], log_path=log)
    await wait_for_log(log, "grandchild")
    grandchild = int(log_text(log).split("grandchild")[1].split()[0])
    assert alive(grandchild)
    await process.terminate(proc, grace_s=2.0)
    assert await eventually(lambda: not alive(grandchild), timeout_s=5.0)


RUNS = {  # how the orchestrator runs its loop: serve's, and the desktop app's backend thread
    "asyncio": "asyncio.run(main())",
    "uvloop": "import uvloop; asyncio.Runner(loop_factory=uvloop.new_event_loop).run(main())",
    "uvloop-thread": (
        "import threading, uvloop\n"
        "t = threading.Thread(target=lambda: uvloop.new_event_loop().run_until_complete(main()))\n"
        "t.start(); t.join()"
    ),
}


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not process.parent_death_signal_supported(), reason="needs Linux prctl(PR_SET_PDEATHSIG)"
)
@pytest.mark.parametrize("run", sorted(RUNS))
def test_engine_dies_with_a_sigkilled_orchestrator(tmp_path: Path, run: str) -> None:
    if run.startswith("uvloop") and not _has_uvloop():
        pytest.skip("uvloop is not installed")
    script = (
        textwrap.dedent(
            f"""
        import asyncio, sys
        from pathlib import Path
        from app.engine_host import process

        async def main():
            proc = await process.spawn(
                [sys.executable, "-c", "import time; time.sleep(600)"],
                log_path=Path({str(tmp_path / "engine.log")!r}),
            )
            print(proc.pid, flush=True)
            await asyncio.sleep(600)

        """
        )
        + RUNS[run]
    )
    orchestrator = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert orchestrator.stdout is not None
        engine_pid = int(orchestrator.stdout.readline())
        assert alive(engine_pid)
        orchestrator.send_signal(signal.SIGKILL)
        orchestrator.wait(timeout=10)
        deadline = time.monotonic() + 10.0
        while alive(engine_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(engine_pid), "engine outlived its SIGKILLed orchestrator"
    finally:
        orchestrator.kill()
        orchestrator.wait(timeout=10)


def test_free_loopback_port_can_be_bound() -> None:
    port = process.free_loopback_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_log_tail_reads_only_what_came_after_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("old run: cudaMalloc failed\n")
    offset = process.log_size(log)
    with log.open("a") as fh:
        fh.write("new run line 1\nnew run line 2\n\nlast line\n")
    tail = process.read_log_tail(log, since=offset)
    assert "cudaMalloc" not in tail
    assert process.last_lines(tail, 2) == "new run line 2 | last line"
    assert process.read_log_tail(tmp_path / "missing.log") == ""
    assert process.log_size(tmp_path / "missing.log") == 0
    assert len(process.read_log_tail(log, max_bytes=5)) == 5
