"""The one table from error codes to plain sentences and the action a user can take.

Every error the window shows (a refused send, a failed stream) goes through
``explain``: the sentence never names HTTP routes, status numbers or exception
classes; the code and the core's own message stay in ``details`` for the
"Details" toggle. Pure: no Qt, tested over the whole ``ErrorCode`` enum.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.orchestrator.contracts import ErrorCode


class Action(StrEnum):
    """What the button next to an error does."""

    RESUME_POOL = "resume_pool"
    OPEN_POOLS = "open_pools"
    OPEN_MODELS = "open_models"
    OPEN_SETTINGS = "open_settings"
    OPEN_LOGS = "open_logs"
    REGENERATE = "regenerate"
    NEW_CHAT = "new_chat"
    CONTINUE_NEW_CHAT = "continue_new_chat"


ACTION_LABELS: dict[Action, str] = {
    Action.RESUME_POOL: "Resume the pool",
    Action.OPEN_POOLS: "Open Pools",
    Action.OPEN_MODELS: "Open Models",
    Action.OPEN_SETTINGS: "Open Settings",
    Action.OPEN_LOGS: "Open Tasks && logs",
    Action.REGENERATE: "Try again",
    Action.NEW_CHAT: "Start a new chat",
    Action.CONTINUE_NEW_CHAT: "Continue in a new chat",
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the table: the sentence ({pool} is filled in) and its action."""

    sentence: str
    action: Action | None = None


ERRORS: dict[str, Entry] = {
    ErrorCode.ADMISSION_REJECT: Entry(
        "This message was not taken: it does not fit the model's context or the chat's "
        "limits. Shorten it, lower Max tokens, or start a new chat.",
        Action.NEW_CHAT,
    ),
    ErrorCode.QUEUE_FULL_DROP_LRU: Entry(
        "This answer was dropped from a full queue to make room for newer work. Try again.",
        Action.REGENERATE,
    ),
    ErrorCode.INVALID_PARAMS: Entry(
        "One of the chat's options is not valid. Check Max tokens, Seed and Placement, "
        "then send again."
    ),
    ErrorCode.POOL_UNREADY: Entry(
        "{pool} is still loading its model. Try again in a moment.", Action.OPEN_POOLS
    ),
    ErrorCode.POOL_UNAVAILABLE: Entry(
        "No pool can answer right now: none serves this model or they are all paused. "
        "Add a model or check Pools.",
        Action.OPEN_MODELS,
    ),
    ErrorCode.REPLICA_EXHAUSTED: Entry(
        "Every pool that could answer is busy or down. Try again in a moment.",
        Action.REGENERATE,
    ),
    ErrorCode.DECODE_TIMEOUT: Entry(
        "The model stopped sending words and the answer was given up. Try again, or "
        "restart the pool in Pools if it keeps happening.",
        Action.REGENERATE,
    ),
    ErrorCode.WORKER_RESET: Entry(
        "The engine of {pool} restarted while answering; the partial answer is kept. Try again.",
        Action.REGENERATE,
    ),
    ErrorCode.DEADLINE_UNMET: Entry(
        "No pool can finish this answer in the time asked for. Try again when the queue is "
        "shorter.",
        Action.REGENERATE,
    ),
    ErrorCode.INTERNAL: Entry(
        "Something went wrong inside llama-orch. The log has the details.", Action.OPEN_LOGS
    ),
}
"""Sentences per code. Two situations get their own sentence (see ``explain``)."""

QUEUE_FULL = Entry(
    "The queue of {pool} is full. Wait {wait} and send again, or raise the queue size in Settings.",
    Action.OPEN_SETTINGS,
)
POOL_PAUSED = Entry("Pool {pool} is paused. Resume it to get an answer.", Action.RESUME_POOL)
UNKNOWN = Entry("Something went wrong. The log has the details.", Action.OPEN_LOGS)


REFUSALS: dict[str, str] = {
    "ctx": "It did not fit the model's context: shorten the prompt or lower Max tokens.",
    "turns": "Its session had used all its turns: send it again in a new session.",
    "tokens_budget": "Its session's token budget was used up: lower Max tokens or start anew.",
    "time_budget": "Its session's time budget was used up: start a new session.",
    "cost_budget": "Its session's cost budget was used up: start a new session.",
    "queue_full": "The queue of {pool} was full: send it again when the queue is shorter.",
    "deadline_unmet": "No pool could finish it in the time asked for: allow more time.",
    "no_feasible_pool": "No pool could take it: none serves the model, or all are paused "
    "or loading. Check Pools.",
    "pinned_pool_infeasible": "The pinned pool could not take it: it is paused, loading "
    "or serves another model. Check Pools, or pin another.",
    "no_preferred_feasible": "No preferred pool could take it and fallback is off: tick "
    "more pools or allow fallback.",
}
"""Why a placement decision refused a task (``DecisionRecord.refusal_reason``)."""


def refusal_sentence(reason: str | None, code: str | None, pool_id: str | None = None) -> str:
    """Return the plain sentence for a refused decision: its reason's sentence, else
    the sentence of its error code. Never raises."""
    template = REFUSALS.get(reason or "")
    if template is None:
        return explain(code or "", pool_id=pool_id).sentence
    return template.replace("{pool}", f"pool {pool_id}" if pool_id else "the pool")


@dataclass(frozen=True, slots=True)
class Explained:
    """What the window shows for one error."""

    sentence: str
    action: Action | None
    pool_id: str | None
    details: str

    @property
    def action_label(self) -> str:
        """Return the button text, "" when there is no action."""
        return ACTION_LABELS[self.action].replace("&&", "&") if self.action else ""


def explain(
    code: str,
    message: str = "",
    *,
    pool_id: str | None = None,
    retry_after_ms: int | None = None,
    paused_pool: str | None = None,
) -> Explained:
    """Return the sentence, action and details for an error code.

    ``retry_after_ms`` set on ADMISSION_REJECT means a full queue; ``paused_pool``
    (a paused pool that could have answered) turns POOL_UNAVAILABLE into "resume it".
    Never raises; an unknown code gets a generic sentence.
    """
    entry = ERRORS.get(code, UNKNOWN)
    if code == ErrorCode.ADMISSION_REJECT and retry_after_ms:
        entry = QUEUE_FULL
    if code == ErrorCode.POOL_UNAVAILABLE and paused_pool:
        entry, pool_id = POOL_PAUSED, paused_pool
    pool = f"pool {pool_id}" if pool_id else "the pool"
    sentence = entry.sentence.replace("Pool {pool}", f"Pool {pool_id}").replace("{pool}", pool)
    wait = f"about {max(1, round(retry_after_ms / 1000))} s" if retry_after_ms else "a moment"
    sentence = sentence.replace("{wait}", wait)
    sentence = sentence[0].upper() + sentence[1:]
    details = f"{code}: {message}" if message else code
    return Explained(sentence, entry.action, pool_id, details)
