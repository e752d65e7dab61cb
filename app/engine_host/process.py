"""Spawning and ending engine processes so that none outlives the orchestrator.

Every engine runs in its own process group (so a signal reaches its helpers
too) and, on Linux, carries a parent-death signal: when the thread that
spawned it dies, even by SIGKILL, the kernel sends the engine SIGKILL. The
spawning thread is the event loop's thread, which lives as long as the
orchestrator does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """Return libc's ``prctl`` (Linux), or None where it does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] | None = getattr(libc, "prctl", None)
    return prctl


_PRCTL = _load_prctl()


def parent_death_signal_supported() -> bool:
    """Return True where engines are killed by the kernel when their parent dies."""
    return _PRCTL is not None


def _make_preexec(parent_pid: int) -> Callable[[], None] | None:
    """Return the child-side hook that arms SIGKILL on parent death, or None.

    The hook runs between fork and exec: it only calls prctl and, if the
    parent already died in that window, exits at once.
    """
    prctl = _PRCTL
    if prctl is None:
        return None

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return arm


async def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> asyncio.subprocess.Process:
    """Start ``argv`` in a new session with its output appended to ``log_path``.

    Returns the running process (its pid is also its process-group id).
    Raises OSError (e.g. FileNotFoundError) when the program cannot be
    started or the log cannot be opened. Must run on the event loop's thread
    (the parent-death signal is tied to the spawning thread); does not block
    beyond the fork.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_fd,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_make_preexec(os.getpid()),
        )
    finally:
        os.close(log_fd)


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid``; a vanished group is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def terminate(proc: asyncio.subprocess.Process, grace_s: float = 5.0) -> int:
    """SIGTERM the process group, SIGKILL it after ``grace_s``, and reap the process.

    Returns the exit status (negative: the signal that ended it). Never
    raises for a process that already exited. Waits up to ``grace_s``
    seconds plus the time the kernel needs to deliver SIGKILL.
    """
    if proc.returncode is None:
        signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=grace_s)
    signal_group(proc.pid, signal.SIGKILL)
    return await proc.wait()


async def kill(proc: asyncio.subprocess.Process) -> int:
    """SIGKILL the process group at once and reap the process; returns its exit status."""
    signal_group(proc.pid, signal.SIGKILL)
    return await proc.wait()


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Another process may take it before it is used; callers that bind it
    should treat "address in use" as retriable. Does not block.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_size(path: Path) -> int:
    """Return the current size of ``path`` in bytes, 0 when it does not exist."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_log_tail(path: Path, *, since: int = 0, max_bytes: int = 64 * 1024) -> str:
    """Return up to the last ``max_bytes`` of ``path`` written after offset ``since``.

    Undecodable bytes are replaced; a missing file gives "". Blocks on a
    small file read.
    """
    try:
        with path.open("rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            fh.seek(max(since, end - max_bytes, 0))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def last_lines(text: str, count: int = 3, max_chars: int = 300) -> str:
    """Return the last ``count`` non-empty lines of ``text`` joined by " | ", shortened."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    joined = " | ".join(lines[-count:])
    return joined if len(joined) <= max_chars else "…" + joined[-max_chars:]
