"""Guardrails: the context-window and session-budget limits a task must fit, and the
prompt-size estimate they use.

Pure: no clock reads, no logging, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

CHARS_PER_TOKEN = 4
"""The prompt-size heuristic: about four characters per token."""

MESSAGE_OVERHEAD_CHARS = 8
"""Characters a chat message adds to the prompt beyond its text (role and framing)."""


@dataclass(frozen=True, slots=True)
class GuardrailRefusal:
    """A task refused by a limit; ``message`` names the limit and the overshoot."""

    limit: str
    message: str


def check_ctx(
    prompt_tokens: int, max_tokens: int, ctx: int, pool_id: str
) -> GuardrailRefusal | None:
    """Return a refusal when prompt + max_tokens does not fit the pool's context, else None.

    Pure; never raises.
    """
    total = prompt_tokens + max_tokens
    if total <= ctx:
        return None
    return GuardrailRefusal(
        "ctx",
        f"prompt (~{prompt_tokens} tokens) + max_tokens ({max_tokens}) = {total} exceeds "
        f"pool {pool_id}'s ctx {ctx} by {total - ctx}; lower max_tokens or shorten the prompt",
    )


def check_budgets(
    expected_tokens: int,
    tokens_remaining: int | None,
    time_remaining_ms: int | None,
    cost_remaining: float | None,
) -> GuardrailRefusal | None:
    """Return a refusal when a session budget cannot cover the task, else None.

    A remaining value of None means unlimited. Refuses when fewer tokens remain
    than ``expected_tokens``, or no time or cost remains. Pure; never raises.
    """
    if tokens_remaining is not None and tokens_remaining < expected_tokens:
        return GuardrailRefusal(
            "tokens_budget",
            f"session token budget has {tokens_remaining} tokens left but this task expects "
            f"{expected_tokens} (short by {expected_tokens - tokens_remaining}); lower "
            "max_tokens or start a new session",
        )
    if time_remaining_ms is not None and time_remaining_ms <= 0:
        return GuardrailRefusal(
            "time_budget",
            f"session time budget is exhausted ({time_remaining_ms} ms remaining); "
            "start a new session",
        )
    if cost_remaining is not None and cost_remaining <= 0:
        return GuardrailRefusal(
            "cost_budget",
            f"session cost budget is exhausted ({cost_remaining:g} remaining); start a new session",
        )
    return None


def prompt_chars(prompt: str | None, message_texts: Iterable[str]) -> int:
    """Return the character size of a prompt, or (when ``prompt`` is None) of chat
    messages, counting ``MESSAGE_OVERHEAD_CHARS`` for each message. Pure."""
    if prompt is not None:
        return len(prompt)
    return sum(len(text) + MESSAGE_OVERHEAD_CHARS for text in message_texts)


def estimate_prompt_tokens(text_chars: int) -> int:
    """Return the estimated token count of a prompt of ``text_chars`` characters.

    Heuristic: ceil(chars / 4), at least 1. Pure.
    """
    return max(1, -(-max(text_chars, 0) // CHARS_PER_TOKEN))
