"""Replay of the upstream CLI consumer pact against the real app (mock pools per state).

Every interaction of ``cli-consumer-orchestratord.json`` is replayed: the
provider state implied by its description is set up with mock pools that report
the engine the pact names, the request is sent as written, and the answer is
compared by status, headers and body under the pact's matching rules (v3: the
pact has none, so values are equal and extra response keys are allowed), with
the deliberate deviations below (each with its reason; docs/API.md lists them
under "Differences from the upstream contract").
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.engine_host.mock import MockSpec
from app.orchestrator.queues import FullPolicy
from tests.api.conftest import Api, FixedClock, MakeApi, parse_frames, wait_until
from tests.api.upstream import load_json

PACT = "contracts/pacts/cli-consumer-orchestratord.json"

# Body values the pact gives as examples of live state; compared by JSON type, not value.
VALUE_BY_TYPE = {
    "queue_position": "depends on the queue at admission; the pact's 3 is an example",
    "predicted_start_ms": "estimated from the pool's measured speed; 420 is an example",
    "retry_after_ms": "estimated from queue depth and measured service time",
    "message": "our messages say what is wrong and how to fix it (one plain sentence)",
    "kv_warmth": "true once a turn ran on a pool that keeps the session's KV",
}
# Headers whose value the server chooses; compared by presence (and consistency below).
HEADER_BY_PRESENCE = {
    "X-Correlation-Id": "generated per request when the client sends none (the pact sends none)",
    "Retry-After": "whole seconds of our retry_after_ms (checked for consistency)",
    "X-Backoff-Ms": "equals our retry_after_ms (checked for consistency)",
}
# Interactions whose upstream answer we deliberately give differently, and why.
STREAMED_ERRORS = {
    "decode timeout": "engine failures happen after admission; the 202 is sent and the "
    "stream ends with an `error` event carrying the code",
    "worker reset": "same: a crashed engine is reported in the stream, then restarted",
    "internal error": "same: an engine error after admission arrives in the stream",
}
REPLICA_EXHAUSTED = (
    "each pool is one engine (one replica set of one); a pool whose slots are busy queues "
    "the task, and a full queue answers 429, so REPLICA_EXHAUSTED is never sent at admission"
)
SSE_PLACEHOLDER = (
    "the pact's SSE body is a placeholder that puts `event:` and `data:` in separate blocks; "
    "we send standard SSE frames (`event: x\\ndata: y\\n\\n`), compared by event sequence and "
    "payload keys"
)


def _llama(**overrides: Any) -> MockSpec:
    """A mock pool standing in for a llama.cpp pool serving the pact's model."""
    spec: dict[str, Any] = {"model": "sha256:abc", "ctx": 16384, "engine": "llamacpp"}
    return MockSpec("llama0", **(spec | overrides))


def _interactions() -> dict[str, dict[str, Any]]:
    pact = load_json(PACT)
    return {i["description"]: i for i in pact["interactions"]}


def _enqueue_body(priority: str = "interactive") -> dict[str, Any]:
    body = dict(_interactions()["enqueue task accepted"]["request"]["body"])
    body["priority"] = priority
    body.pop("task_id")
    return body


async def _ready(make_api: MakeApi, **cfg: Any) -> Api:
    return await make_api(_llama(tokens_per_s=0), clock=FixedClock(), **cfg)


async def _finished_task_in_session(make_api: MakeApi) -> Api:
    api = await _ready(make_api)
    body = _enqueue_body() | {"session_id": "22222222-2222-4222-8222-222222222222"}
    task_id = await api.submit(**body)
    resp = await api.client.get(f"/v1/tasks/{task_id}/stream")
    await resp.read()
    return api


async def _existing_task(make_api: MakeApi) -> Api:
    api = await make_api(_llama(tokens_per_s=1))
    await api.submit(**_interactions()["enqueue task accepted"]["request"]["body"])
    return api


async def _batch_queue_full_drop_lru(make_api: MakeApi) -> Api:
    # Our drop-lru admits a batch task by dropping the oldest batch one; it refuses a
    # batch task only while the queue is over a lowered capacity, set up here.
    api = await make_api(_llama(tokens_per_s=1), queue_capacity=2, full_policy=FullPolicy.DROP_LRU)
    for _ in range(3):
        await api.submit(**_enqueue_body("batch"))
    api.orch.set_admission(1, FullPolicy.DROP_LRU)
    return api


async def _interactive_queue_full(make_api: MakeApi) -> Api:
    api = await make_api(_llama(tokens_per_s=1), queue_capacity=1)
    await api.submit(**_enqueue_body())
    await wait_until(lambda: api.orch.pool_view("llama0").slots_busy == 1)
    await api.submit(**_enqueue_body())
    return api


async def _unready(make_api: MakeApi) -> Api:
    return await make_api(_llama(start_delay_ms=60_000))


async def _no_llamacpp_pool(make_api: MakeApi) -> Api:
    return await make_api(MockSpec("m0", model="sha256:abc", ctx=16384, tokens_per_s=0))


Setup = Callable[[MakeApi], Awaitable[Api]]
STATES: dict[str, Setup] = {
    "enqueue task accepted": _ready,
    "cancel task no content": _existing_task,
    "get session info": _finished_task_in_session,
    "delete session": _finished_task_in_session,
    "enqueue task queue full": _batch_queue_full_drop_lru,
    "admission reject (policy)": _interactive_queue_full,
    "invalid params": _ready,
    "pool unready": _unready,
    "pool unavailable": _no_llamacpp_pool,
}


def test_every_interaction_is_replayed_or_listed_as_a_deviation() -> None:
    covered = set(STATES) | set(STREAMED_ERRORS) | {"stream task events (SSE placeholder)"}
    assert set(_interactions()) == covered | {"replica exhausted"}


@pytest.mark.parametrize("description", sorted(STATES))
async def test_interaction_replays(make_api: MakeApi, description: str) -> None:
    interaction = _interactions()[description]
    api = await STATES[description](make_api)
    req, expected = interaction["request"], interaction["response"]
    resp = await api.client.request(
        req["method"], req["path"], json=req.get("body"), headers=req.get("headers")
    )
    raw = await resp.read()
    assert resp.status == expected["status"], raw.decode()
    _check_headers(expected.get("headers", {}), resp.headers)
    if "body" in expected:
        body = json.loads(raw)
        _check_body(expected["body"], body, "$.body")
        _check_backoff_headers(body, resp.headers)


async def test_sse_interaction_gives_its_event_sequence(make_api: MakeApi) -> None:
    # Deviation SSE_PLACEHOLDER: compared by event sequence and payload keys.
    interaction = _interactions()["stream task events (SSE placeholder)"]
    api = await _ready(make_api)
    first = _interactions()["enqueue task accepted"]["request"]["body"] | {"max_tokens": 1}
    await api.submit(**first)
    req, expected = interaction["request"], interaction["response"]
    resp = await api.client.get(req["path"], headers=req["headers"])
    assert resp.status == expected["status"]
    _check_headers(expected["headers"], resp.headers)
    frames = parse_frames(await resp.read())
    wanted = _placeholder_events(expected["body"])
    assert [event for event, _ in frames] == [event for event, _ in wanted]
    for (_, got), (_, want) in zip(frames, wanted, strict=True):
        assert set(json.loads(want)) <= set(json.loads(got))


@pytest.mark.parametrize(
    ("description", "fault"),
    [
        ("decode timeout", {"hang_after_tokens": 1, "decode_timeout_s": 0.2}),
        ("worker reset", {"crash_after_tokens": 1}),
        ("internal error", {"fail_after_tokens": 1}),
    ],
)
async def test_engine_failures_arrive_in_the_stream(
    make_api: MakeApi, description: str, fault: dict[str, Any]
) -> None:
    # Deviation STREAMED_ERRORS: the pact's 500 code and engine come in the `error` event.
    interaction = _interactions()[description]
    expected = interaction["response"]["body"]
    api = await make_api(_llama(tokens_per_s=0, **fault))
    resp = await api.client.post("/v1/tasks", json=interaction["request"]["body"])
    assert resp.status == 202, await resp.text()
    task_id = (await resp.json())["task_id"]
    stream = await api.client.get(f"/v1/tasks/{task_id}/stream")
    event, data = parse_frames(await asyncio.wait_for(stream.read(), 10))[-1]
    assert event == "error"
    error = json.loads(data)
    assert (error["code"], error["engine"]) == (expected["code"], expected["engine"])


async def test_replica_exhausted_state_answers_with_a_full_queue(make_api: MakeApi) -> None:
    # Deviation REPLICA_EXHAUSTED: with every slot busy and the queue full we answer 429.
    interaction = _interactions()["replica exhausted"]
    api = await _interactive_queue_full(make_api)
    resp = await api.client.post("/v1/tasks", json=interaction["request"]["body"])
    assert resp.status == 429
    body = await resp.json()
    assert (body["code"], body["engine"]) == ("ADMISSION_REJECT", "llamacpp")


# ---- matching ------------------------------------------------------------------------


def _check_headers(expected: dict[str, str], actual: Any) -> None:
    for name, value in expected.items():
        assert name in actual, f"missing header {name}"
        if name in HEADER_BY_PRESENCE:
            continue
        if name.lower() == "content-type":
            assert actual[name].split(";")[0].strip() == value
        else:
            assert actual[name] == value, name


def _check_body(expected: Any, actual: Any, path: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing"
            if key in VALUE_BY_TYPE:
                assert type(actual[key]) is type(value), f"{path}.{key}: {actual[key]!r}"
            else:
                _check_body(value, actual[key], f"{path}.{key}")
        return
    assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _check_backoff_headers(body: dict[str, Any], headers: Any) -> None:
    if "retry_after_ms" not in body or "X-Backoff-Ms" not in headers:
        return
    assert int(headers["X-Backoff-Ms"]) == body["retry_after_ms"]
    assert int(headers["Retry-After"]) == max(1, -(-body["retry_after_ms"] // 1000))


def _placeholder_events(body: str) -> list[tuple[str, str]]:
    """Pair each ``event:`` block of the pact's placeholder with the ``data:`` block after it."""
    blocks = [b.strip() for b in body.split("\n\n") if b.strip()]
    names = [b.removeprefix("event: ") for b in blocks if b.startswith("event: ")]
    datas = [b.removeprefix("data: ") for b in blocks if b.startswith("data: ")]
    return list(zip(names, datas, strict=True))
