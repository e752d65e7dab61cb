"""Pure helpers of the chat panel: picker values -> TaskRequest, and status texts.

Nothing here touches Qt, so it is tested without widgets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.orchestrator.contracts import (
    ChatMessage,
    FinishReason,
    PlacementMode,
    PlacementOverrides,
    PoolView,
    Priority,
    TaskRequest,
)
from app.orchestrator.events import EndData
from app.orchestrator.guardrails import estimate_prompt_tokens, prompt_chars
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
    messages: Sequence[ChatMessage], opts: ChatOptions, session_id: str | None
) -> TaskRequest:
    """Return the TaskRequest for one turn sending ``messages``.

    Raises ValueError (pydantic's ValidationError included) for an invalid option.
    """
    return TaskRequest(
        session_id=session_id,
        messages=list(messages),
        model_ref=model_ref_for_target(opts.target),
        priority=opts.priority,
        seed=opts.seed,
        max_tokens=opts.max_tokens,
        temperature=opts.temperature,
        placement=placement_for(opts.mode, opts.pin_pool, opts.pools),
    )


def context_of(pools: Sequence[PoolView], opts: ChatOptions) -> int:
    """Return the smallest context among the pools the chat may land on (0 if none)."""
    ref = model_ref_for_target(opts.target)
    if opts.mode == "pin" and opts.pin_pool:
        ref = opts.pin_pool
    ctxs = [p.ctx for p in pools if ref is None or ref in (p.model, p.pool_id)]
    return min(ctxs, default=0)


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


def ordinal(n: int) -> str:
    """Return "1st", "2nd", "3rd", "4th", "11th", "22nd" for ``n`` >= 1."""
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def queued_text(pool_id: str, position: int, predicted_start_ms: int) -> str:
    """Return the status line of a waiting task: "2nd in line on gpu0, about 4 s".

    ``position`` is the core's 0-based place in the queue (0 = next to start).
    """
    place = "Next" if position <= 0 else ordinal(position + 1)
    wait = max(0, predicted_start_ms) / 1000
    eta = "any moment" if wait < 0.5 else f"about {wait:.0f} s"
    return f"{place} in line on {pool_id}, {eta}"


@dataclass(frozen=True, slots=True)
class Trimmed:
    """The messages one turn sends, and how many earlier ones were left out."""

    messages: list[ChatMessage]
    dropped: int


def trim_to_context(
    system: str, history: Sequence[ChatMessage], prompt: str, ctx: int, max_tokens: int
) -> Trimmed:
    """Return the system prompt, the newest history that fits, and the new user message.

    Uses the core's own size estimate, so a trimmed turn is never refused for its
    length: oldest turns go first, the system prompt and the new message always
    stay. ``ctx`` <= 0 means unknown (nothing is dropped). Pure; never raises.
    """
    head = [ChatMessage(role="system", content=system)] if system.strip() else []
    tail = [ChatMessage(role="user", content=prompt)]
    budget = ctx - max_tokens
    kept: list[ChatMessage] = []
    for msg in reversed(history):
        trial = [*head, msg, *kept, *tail]
        if ctx > 0 and _tokens(trial) > budget:
            break
        kept.insert(0, msg)
    while kept and kept[0].role == "assistant":  # start at a user turn
        kept.pop(0)
    return Trimmed([*head, *kept, *tail], len(history) - len(kept))


def paired(history: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Return ``history`` without user messages that never got an answer (a failed or
    refused turn), so the roles alternate as chat templates expect. Pure."""
    out: list[ChatMessage] = []
    for msg in history:
        if out and out[-1].role == "user" and msg.role == "user":
            out.pop()
        out.append(msg)
    if out and out[-1].role == "user":
        out.pop()
    return out


def _tokens(messages: Sequence[ChatMessage]) -> int:
    return estimate_prompt_tokens(prompt_chars(None, (m.content for m in messages)))


CONTEXT_CUT = (
    "The answer was cut off: the conversation filled the model's context. Start a new "
    "chat, or continue in a new chat that starts from a summary of this one."
)


def context_cut(end: EndData, max_tokens: int) -> bool:
    """Return True when an ``end`` payload says the model's context ran out.

    "length" below ``max_tokens`` means the context was full (at ``max_tokens``
    the answer only reached the chat's own limit).
    """
    return end["finish_reason"] == FinishReason.LENGTH and end["tokens_out"] < max_tokens


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
