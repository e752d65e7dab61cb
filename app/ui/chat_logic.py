"""Pure helpers of the chat panel: picker values -> TaskRequest, and status texts.

Nothing here touches Qt, so it is tested without widgets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.orchestrator.contracts import (
    ChatMessage,
    PlacementMode,
    PlacementOverrides,
    PoolView,
    Priority,
    TaskRequest,
)
from app.orchestrator.errors import OrchError
from app.orchestrator.events import EndData
from app.orchestrator.pools import decode_tokens_per_s

MODES = ("auto", "pin", "prefer", "avoid")
SEED_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class ChatOptions:
    """What the option row of a conversation says.

    ``target`` is "" (any pool), "model:NAME" or "pool:ID"; ``pools`` are the
    ticked pools for prefer/avoid.
    """

    target: str = ""
    priority: Priority = Priority.INTERACTIVE
    mode: str = "auto"
    pin_pool: str | None = None
    pools: tuple[str, ...] = ()
    seed: int | None = None
    max_tokens: int = 256
    temperature: float = 0.8


def placement_for(mode: str, pin_pool: str | None, pools: Sequence[str]) -> PlacementOverrides:
    """Return the overrides for a placement mode of the picker.

    pin -> mode pin + pin_pool_id; prefer -> mode prefer + prefer_pools; avoid ->
    mode auto + avoid_pools; auto -> defaults. Raises ValueError (with what to do)
    when pin has no pool or prefer has none ticked.
    """
    if mode == "pin":
        if not pin_pool:
            raise ValueError("Placement 'pin' needs a pool: choose one next to the mode.")
        return PlacementOverrides(mode=PlacementMode.PIN, pin_pool_id=pin_pool)
    if mode == "prefer":
        if not pools:
            raise ValueError("Placement 'prefer' needs at least one ticked pool.")
        return PlacementOverrides(mode=PlacementMode.PREFER, prefer_pools=list(pools))
    if mode == "avoid":
        return PlacementOverrides(mode=PlacementMode.AUTO, avoid_pools=list(pools))
    return PlacementOverrides()


def model_ref_for_target(target: str) -> str | None:
    """Return the model_ref of a picker entry: the model name, the pool id (the core
    matches model_ref against both), or None for "auto (any pool)"."""
    kind, _, value = target.partition(":")
    return value if kind in ("model", "pool") and value else None


def build_request(
    history: Sequence[ChatMessage], prompt: str, opts: ChatOptions, session_id: str
) -> TaskRequest:
    """Return the TaskRequest for one turn: the history plus the new user message.

    Raises ValueError (pydantic's ValidationError included) for an invalid option.
    """
    return TaskRequest(
        session_id=session_id,
        messages=[*history, ChatMessage(role="user", content=prompt)],
        model_ref=model_ref_for_target(opts.target),
        priority=opts.priority,
        seed=opts.seed,
        max_tokens=opts.max_tokens,
        temperature=opts.temperature,
        placement=placement_for(opts.mode, opts.pin_pool, opts.pools),
    )


def parse_seed(text: str) -> int | None:
    """Return the seed typed by the user, None when empty. Raises ValueError when it is
    not an integer in 0 .. 2^32-1."""
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or int(text) > SEED_MAX:
        raise ValueError(f"Seed must be a whole number from 0 to {SEED_MAX}, or empty.")
    return int(text)


def answer_stats(ttft_ms: float | None, end: EndData) -> str:
    """Return "TTFT 35 ms · 120.4 tokens/s · 64 tokens · stop" for an ``end`` payload."""
    tokens = end["tokens_out"]
    rate = decode_tokens_per_s(tokens, end["decode_time_ms"])
    parts = ["TTFT —" if ttft_ms is None else f"TTFT {ttft_ms:.0f} ms"]
    if rate is not None:
        parts.append(f"{rate:.1f} tokens/s")
    parts.append(f"{tokens} tokens")
    parts.append(end["finish_reason"])
    return " · ".join(parts)


def refusal_text(exc: OrchError) -> str:
    """Return the inline message for a refused submit (code, status, retry hint)."""
    text = f"Not sent — {exc.message} ({exc.code}, HTTP {exc.status})."
    if exc.retry_after_ms:
        text += f" Try again in about {exc.retry_after_ms / 1000:.1f} s."
    return text


def queued_text(pool_id: str, position: int, predicted_start_ms: int) -> str:
    """Return the status line of a queued task."""
    if position <= 0:
        return f"Admitted on {pool_id}; starting…"
    return (
        f"Queued on {pool_id} at position {position}; predicted start in "
        f"~{predicted_start_ms / 1000:.1f} s"
    )


def tab_title(prompt: str, limit: int = 24) -> str:
    """Return a short tab title from the first prompt of a conversation."""
    words = " ".join(prompt.split())
    return words if len(words) <= limit else words[: limit - 1].rstrip() + "…"


def target_entries(pools: Sequence[PoolView]) -> list[tuple[str, str]]:
    """Return the (label, value) entries of the model / pool picker."""
    models = sorted({p.model for p in pools if p.model})
    entries = [("auto (any pool)", "")]
    entries += [(f"model: {m}", f"model:{m}") for m in models]
    entries += [
        (f"pool: {p.pool_id} ({p.model or 'no model'})", f"pool:{p.pool_id}") for p in pools
    ]
    return entries
