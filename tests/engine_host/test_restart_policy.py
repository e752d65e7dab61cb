"""Supervision policy: backoff, crash-loop breaker, healthy reset, exit causes."""

from __future__ import annotations

import random
import signal

import pytest

from app.engine_host.restart_policy import CrashHistory, RestartPolicy, classify_exit


class FixedRandom:
    """A random source that always returns one end of the requested range."""

    def __init__(self, high: bool) -> None:
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def crash_at(policy: RestartPolicy, history: CrashHistory, now: float) -> CrashHistory:
    return policy.on_crash(history, now)


def test_nominal_backoff_doubles_from_one_second_and_caps_at_sixty() -> None:
    policy = RestartPolicy()
    delays = [policy.nominal_delay_s(streak) for streak in range(1, 10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]


@pytest.mark.parametrize("streak", [1, 2, 3, 5, 6, 7, 40])
def test_jitter_stays_within_bounds_and_under_the_cap(streak: int) -> None:
    policy = RestartPolicy(jitter=0.1)
    nominal = policy.nominal_delay_s(streak)
    low = policy.delay_s(streak, FixedRandom(high=False))
    high = policy.delay_s(streak, FixedRandom(high=True))
    assert low == pytest.approx(nominal * 0.9)
    assert high == pytest.approx(min(60.0, nominal * 1.1))
    rng = random.Random(7)
    samples = [policy.delay_s(streak, rng) for _ in range(200)]
    assert all(low - 1e-9 <= d <= high + 1e-9 for d in samples)
    assert len(set(samples)) > 1 or nominal * 0.9 >= 60.0


def test_decisions_follow_the_backoff_until_more_than_five_crashes_in_a_minute() -> None:
    policy = RestartPolicy(jitter=0.0)
    history = CrashHistory()
    rng = random.Random(0)
    expected = [(0.0, 1.0), (2.0, 2.0), (5.0, 4.0), (10.0, 8.0), (19.0, 16.0)]
    for now, delay in expected:
        history = crash_at(policy, history, now)
        decision = policy.decide(history, now, rng)
        assert decision.restart
        assert decision.delay_s == delay
    history = crash_at(policy, history, 36.0)
    decision = policy.decide(history, 36.0, rng)
    assert not decision.restart
    assert decision.crashes_recent == 6
    assert "6 crashes within 60 s" in decision.reason


def test_five_crashes_in_a_minute_still_restart() -> None:
    policy = RestartPolicy(jitter=0.0)
    history = CrashHistory()
    for now in (0.0, 1.0, 2.0, 3.0, 4.0):
        history = crash_at(policy, history, now)
    assert policy.decide(history, 4.0, random.Random(0)).restart


def test_crashes_spread_wider_than_the_window_keep_restarting_at_the_cap() -> None:
    policy = RestartPolicy(jitter=0.0)
    history = CrashHistory()
    decision = None
    for i in range(12):
        now = i * 15.0
        history = crash_at(policy, history, now)
        decision = policy.decide(history, now, random.Random(0))
        assert decision.restart, f"crash {i + 1} at {now} s should still restart"
    assert decision is not None
    assert decision.delay_s == 60.0
    assert decision.crashes_recent == 4


def test_ten_healthy_minutes_reset_the_streak() -> None:
    policy = RestartPolicy(jitter=0.0)
    history = CrashHistory()
    for now in (0.0, 1.0, 3.0):
        history = crash_at(policy, history, now)
    history = policy.on_ready(history, 10.0)

    almost = crash_at(policy, history, 10.0 + 599.0)
    assert almost.streak == 4
    assert policy.decide(almost, 609.0, random.Random(0)).delay_s == 8.0

    reset = crash_at(policy, history, 10.0 + 600.0)
    assert reset.streak == 1
    assert policy.decide(reset, 610.0, random.Random(0)).delay_s == 1.0


def test_crashes_recent_counts_only_the_window() -> None:
    policy = RestartPolicy()
    history = CrashHistory()
    for now in (0.0, 30.0, 50.0):
        history = crash_at(policy, history, now)
    assert policy.crashes_recent(history, 50.0) == 3
    assert policy.crashes_recent(history, 70.0) == 2
    assert policy.crashes_recent(history, 200.0) == 0


@pytest.mark.parametrize(
    ("returncode", "log_tail", "expected"),
    [
        (1, "ggml_cuda_init...\ncudaMalloc failed: out of memory\n", "VRAM OOM"),
        (-6, "CUDA error: out of memory", "VRAM OOM"),
        (-int(signal.SIGKILL), "", "host OOM"),
        (-6, "terminate called after throwing an instance of 'std::bad_alloc'", "host OOM"),
        (3, "llama_model_load: error", "exited with code 3"),
        (-int(signal.SIGSEGV), "", "killed by SIGSEGV"),
    ],
)
def test_exit_causes_tell_vram_oom_from_host_oom(
    returncode: int, log_tail: str, expected: str
) -> None:
    cause = classify_exit(returncode, log_tail)
    assert cause.startswith(expected)
