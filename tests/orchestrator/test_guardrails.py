"""Guardrails: the context-window check, session budgets and the prompt-size estimate."""

from __future__ import annotations

import pytest

from app.orchestrator.guardrails import (
    MESSAGE_OVERHEAD_CHARS,
    GuardrailRefusal,
    check_budgets,
    check_ctx,
    estimate_prompt_tokens,
    prompt_chars,
)


def test_check_ctx_message_has_the_numbers() -> None:
    refusal = check_ctx(1200, 4000, 4096, "gpu0")
    assert refusal == GuardrailRefusal(
        "ctx",
        "prompt (~1200 tokens) + max_tokens (4000) = 5200 exceeds pool gpu0's ctx 4096 by 1104; "
        "lower max_tokens or shorten the prompt",
    )


@pytest.mark.parametrize(("prompt", "max_tokens"), [(96, 4000), (1, 1), (0, 4096)])
def test_check_ctx_fits(prompt: int, max_tokens: int) -> None:
    assert check_ctx(prompt, max_tokens, 4096, "gpu0") is None


BUDGET_CASES = [
    ("unlimited", (500, None, None, None), None, ()),
    ("enough tokens", (100, 100, 1, 0.5), None, ()),
    ("short on tokens", (256, 100, None, None), "tokens_budget", ("100", "256", "156")),
    ("time exhausted", (1, None, 0, None), "time_budget", ("0 ms",)),
    ("time overdrawn", (1, None, -20, None), "time_budget", ("-20 ms",)),
    ("cost exhausted", (1, None, None, 0.0), "cost_budget", ("cost",)),
    ("tokens checked first", (10, 5, 0, 0.0), "tokens_budget", ("5",)),
]


@pytest.mark.parametrize(
    ("args", "limit", "fragments"),
    [case[1:] for case in BUDGET_CASES],
    ids=[case[0] for case in BUDGET_CASES],
)
def test_check_budgets(
    args: tuple[int, int | None, int | None, float | None],
    limit: str | None,
    fragments: tuple[str, ...],
) -> None:
    refusal = check_budgets(*args)
    if limit is None:
        assert refusal is None
        return
    assert refusal is not None
    assert refusal.limit == limit
    for fragment in fragments:
        assert fragment in refusal.message


@pytest.mark.parametrize(
    ("chars", "tokens"), [(0, 1), (-3, 1), (1, 1), (4, 1), (5, 2), (400, 100), (401, 101)]
)
def test_estimate_prompt_tokens(chars: int, tokens: int) -> None:
    assert estimate_prompt_tokens(chars) == tokens


def test_prompt_chars_counts_message_overhead_once_per_message() -> None:
    assert prompt_chars("hello", ["ignored"]) == 5
    assert prompt_chars(None, ["hi", "there"]) == 2 + 5 + 2 * MESSAGE_OVERHEAD_CHARS
    assert prompt_chars(None, []) == 0
