"""Continue a chat in a new one: the same pool summarises the conversation, and the
summary becomes part of the new chat's system prompt.

``summary_request`` and ``carried_system_prompt`` are pure; ``summarise`` runs
the request through the bridge like any chat turn and returns the text.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.orchestrator.contracts import (
    ChatMessage,
    ErrorCode,
    PlacementMode,
    PlacementOverrides,
    Priority,
    TaskRequest,
)
from app.orchestrator.errors import OrchError
from app.orchestrator.events import ERROR, TOKEN
from app.orchestrator.guardrails import CHARS_PER_TOKEN, MESSAGE_OVERHEAD_CHARS
from app.ui.bridge import Bridge

SUMMARY_SYSTEM = "You write short, faithful summaries of conversations."
SUMMARY_ASK = (
    "Summarise the conversation below in a few sentences: its topic, what was asked and "
    "answered, and what the last answer was doing when it stopped. Write only the summary."
)
SUMMARY_TOKENS = 200
"""The longest summary asked for (less on a small context)."""
UNKNOWN_CTX_CHARS = 16_000
"""How much of the conversation is sent when the pool's context is not known."""
LEFT_OUT = "[the beginning of the conversation is left out]\n\n"
SUMMARY_HEADING = "Summary of the earlier conversation, to continue from:"
SHARES = (2, 4, 8)
"""The parts of the context the conversation may take, tried in turn (1/2, 1/4, 1/8)
while the engine finds the text too long for its context."""
TOO_LONG = "Even the end of this conversation is too long for the model's context."
_NAMES = {"user": "User", "assistant": "Assistant"}


def conversation_text(history: Sequence[ChatMessage]) -> str:
    """Return the conversation as plain text, one "User: …" / "Assistant: …" block per
    message. Pure."""
    return "\n\n".join(f"{_NAMES.get(m.role, m.role)}: {m.content.strip()}" for m in history)


def summary_budget(ctx: int, share: int = 2) -> tuple[int, int]:
    """Return (max_tokens, characters of conversation) for a summary on a ``ctx`` context.

    The conversation gets 1/``share`` of the context by the core's estimate (half
    at first: the chat was just cut by the context, so the estimate is not trusted
    to the last token). ``ctx`` <= 0 means unknown. Pure.
    """
    if ctx <= 0:
        return SUMMARY_TOKENS, UNKNOWN_CTX_CHARS // max(1, share // 2)
    max_tokens = max(16, min(SUMMARY_TOKENS, ctx // 4))
    fixed = len(SUMMARY_SYSTEM) + len(SUMMARY_ASK) + 2 + 2 * MESSAGE_OVERHEAD_CHARS
    chars = (ctx // max(2, share)) * CHARS_PER_TOKEN - fixed
    return max_tokens, max(0, chars)


def summary_request(
    history: Sequence[ChatMessage], pool_id: str, ctx: int, share: int = 2
) -> TaskRequest:
    """Return the task asking pool ``pool_id`` (any pool when "") to summarise ``history``.

    Only the newest part of the conversation that fits ``summary_budget(ctx, share)``
    is sent, marked as cut at its start. Pure; never raises.
    """
    max_tokens, chars = summary_budget(ctx, share)
    text = conversation_text(history)
    if len(text) > chars:
        text = LEFT_OUT + text[len(text) - max(0, chars - len(LEFT_OUT)) :]
    placement = (
        PlacementOverrides(mode=PlacementMode.PIN, pin_pool_id=pool_id)
        if pool_id
        else PlacementOverrides()
    )
    return TaskRequest(
        messages=[
            ChatMessage(role="system", content=SUMMARY_SYSTEM),
            ChatMessage(role="user", content=f"{SUMMARY_ASK}\n\n{text}"),
        ],
        priority=Priority.INTERACTIVE,
        max_tokens=max_tokens,
        temperature=0.3,
        placement=placement,
    )


def carried_system_prompt(system: str, summary: str) -> str:
    """Return the new chat's system prompt: the old one, then the summary. Pure."""
    parts = [system.strip(), f"{SUMMARY_HEADING}\n\n{summary.strip()}"]
    return "\n\n".join(p for p in parts if p)


async def summarise(bridge: Bridge, req: TaskRequest) -> str:
    """Submit ``req``, read its stream to the end and return the summary's text.

    Returns "" when the model wrote nothing. Raises OrchError for a refused task
    or a failed stream (with its code and pool). Awaits the whole answer.
    """
    resp = await bridge.submit(req)
    parts: list[str] = []
    async for batch in bridge.stream(str(resp.task_id)):
        for event in batch:
            if event.kind == TOKEN:
                parts.append(event.data["t"])
            elif event.kind == ERROR:
                data = event.data
                raise OrchError(data["code"], data["message"], pool_id=data["pool_id"])
    return "".join(parts).strip()


async def summarise_history(
    bridge: Bridge, history: Sequence[ChatMessage], pool_id: str, ctx: int
) -> str:
    """Return a summary of ``history`` from pool ``pool_id``, sending less of it while
    the engine finds it too long (its tokenizer counts more than the core's estimate:
    the engine refuses the prompt, or writes nothing before the context is full).

    Returns "" when even the smallest part gave nothing. Raises OrchError for any
    other failure; INVALID_PARAMS with ``TOO_LONG`` when the smallest part was refused.
    Awaits each answer in turn.
    """
    for share in SHARES:
        try:
            summary = await summarise(bridge, summary_request(history, pool_id, ctx, share))
        except OrchError as exc:
            if exc.code != ErrorCode.INVALID_PARAMS:
                raise
            if share == SHARES[-1]:
                raise OrchError(
                    exc.code, f"{TOO_LONG} ({exc.message})", pool_id=exc.pool_id
                ) from exc
            continue
        if summary:
            return summary
    return ""
