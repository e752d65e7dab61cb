"""The machine a run measures on, and how busy other processes kept it.

A benchmark on a shared machine is only as good as its quiet: ``Meter`` reads
the machine's busy CPU time (``/proc/stat``) and the CPU time of this process
tree, so each scenario can report the share of the machine that processes
outside the benchmark used meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import CLOCK_TICKS, cpu_seconds


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load_average() -> float:
    """Return the 1-minute load average."""
    return os.getloadavg()[0]


def machine_busy_s() -> float:
    """Return the CPU seconds all cores spent busy since boot (user, system, irq, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return parents


def tree_cpu_s() -> float:
    """Return the CPU seconds of this process, its ended children and its live descendants."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + ended.ru_utime + ended.ru_stime
    parents = _parents()
    family = {os.getpid()}
    changed = True
    while changed:
        kids = {pid for pid, ppid in parents.items() if ppid in family and pid not in family}
        family |= kids
        changed = bool(kids)
    for pid in family - {os.getpid()}:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


@dataclass
class Meter:
    """Started at the beginning of a scenario; ``read`` says how busy others kept the machine."""

    wall: float
    busy: float
    ours: float
    load: float

    @classmethod
    def start(cls) -> Meter:
        """Return a meter started now."""
        return cls(time.perf_counter(), machine_busy_s(), tree_cpu_s(), load_average())

    def read(self) -> dict[str, float]:
        """Return the others' share of all cores, ours, and the load averages since start."""
        wall = time.perf_counter() - self.wall
        cores = os.cpu_count() or 1
        busy = machine_busy_s() - self.busy
        ours = tree_cpu_s() - self.ours
        return {
            "seconds": wall,
            "others_cpu_share": max(0.0, busy - ours) / (wall * cores),
            "bench_cpu_share": ours / (wall * cores),
            "load_start": self.load,
            "load_end": load_average(),
        }


def describe() -> dict[str, Any]:
    """Return the machine and software description recorded with the figures."""
    import aiohttp

    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "platform": platform.platform(),
    }


def wait_for_quiet(max_wait_s: float, threshold: float = 0.7) -> float:
    """Wait until the 1-minute load average is below ``threshold`` or ``max_wait_s`` passed.

    Returns the load average when it stopped waiting. Blocks (sleeps).
    """
    deadline = time.monotonic() + max_wait_s
    while load_average() >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    return load_average()
