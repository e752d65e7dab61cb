"""Supervision policy for engine processes: when to restart and why an engine exited.

Everything here decides from data (times, counts, a random source passed
in) and returns decisions; it never sleeps, reads a clock or logs, so tests
drive it with plain numbers.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from typing import Protocol


class UniformSource(Protocol):
    """A random source (``random.Random`` fits)."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True, slots=True)
class CrashHistory:
    """What the policy remembers about one pool's crashes.

    ``streak`` counts crashes since the last reset and drives the backoff;
    ``recent`` holds the times of crashes inside the window; ``ready_since``
    is when the engine last became ready (None while it is not).
    """

    streak: int = 0
    recent: tuple[float, ...] = ()
    ready_since: float | None = None


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """Whether to restart after a crash, after how long, and why not if not."""

    restart: bool
    delay_s: float
    crashes_recent: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Exponential backoff with jitter and a crash-loop breaker.

    The n-th crash of a streak waits ``min(cap_s, base_s * 2**(n-1))`` seconds
    scaled by a random factor in ``[1 - jitter, 1 + jitter]`` (never above
    ``cap_s``). More than ``max_crashes`` crashes within ``window_s`` stop
    automatic restarts. ``healthy_reset_s`` of continuous readiness resets
    the streak.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.1
    max_crashes: int = 5
    window_s: float = 60.0
    healthy_reset_s: float = 600.0

    def nominal_delay_s(self, streak: int) -> float:
        """Return the backoff before the restart following the ``streak``-th crash."""
        exponent = min(max(streak - 1, 0), 62)
        return min(self.cap_s, self.base_s * 2.0**exponent)

    def delay_s(self, streak: int, rng: UniformSource) -> float:
        """Return the jittered backoff for ``streak``, within [0, cap_s]."""
        factor = 1.0 + rng.uniform(-self.jitter, self.jitter)
        return max(0.0, min(self.cap_s, self.nominal_delay_s(streak) * factor))

    def on_ready(self, history: CrashHistory, now: float) -> CrashHistory:
        """Return the history after the engine became ready at ``now``."""
        return replace(history, ready_since=now)

    def on_crash(self, history: CrashHistory, now: float) -> CrashHistory:
        """Return the history after a crash at ``now`` (a long healthy run resets the streak)."""
        streak = 0 if self.healthy_long_enough(history, now) else history.streak
        recent = (*self._in_window(history.recent, now), now)
        return CrashHistory(streak=streak + 1, recent=recent, ready_since=None)

    def healthy_long_enough(self, history: CrashHistory, now: float) -> bool:
        """Return True when the engine has been ready for ``healthy_reset_s`` at ``now``."""
        since = history.ready_since
        return since is not None and now - since >= self.healthy_reset_s

    def crashes_recent(self, history: CrashHistory, now: float) -> int:
        """Return how many crashes fall inside the window ending at ``now``."""
        return len(self._in_window(history.recent, now))

    def decide(self, history: CrashHistory, now: float, rng: UniformSource) -> RestartDecision:
        """Return whether and when to restart, given the history including the latest crash."""
        recent = self.crashes_recent(history, now)
        if recent > self.max_crashes:
            reason = (
                f"{recent} crashes within {self.window_s:g} s (limit {self.max_crashes}); "
                "automatic restarts stopped, restart the pool by hand once the cause is fixed"
            )
            return RestartDecision(False, 0.0, recent, reason)
        return RestartDecision(True, self.delay_s(history.streak, rng), recent)

    def _in_window(self, times: tuple[float, ...], now: float) -> tuple[float, ...]:
        return tuple(t for t in times if now - t < self.window_s)


_VRAM_OOM_MARKERS = ("out of memory", "cudamalloc failed", "cuda_error_out_of_memory")
_HOST_OOM_MARKERS = ("std::bad_alloc", "memoryerror", "cannot allocate memory")


def classify_exit(returncode: int | None, log_tail: str) -> str:
    """Return a short, user-facing cause for an engine exit.

    "VRAM OOM" when the log shows a CUDA allocation failure; "host OOM" for
    SIGKILL (the kernel's OOM killer) or a host allocation failure; else the
    exit code or signal. Pure.
    """
    text = log_tail.lower()
    if any(marker in text for marker in _VRAM_OOM_MARKERS):
        return "VRAM OOM"
    if any(marker in text for marker in _HOST_OOM_MARKERS):
        return "host OOM"
    if returncode == -signal.SIGKILL:
        return "host OOM (killed by SIGKILL, as the kernel's OOM killer does)"
    if returncode is None:
        return "unknown exit"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"
