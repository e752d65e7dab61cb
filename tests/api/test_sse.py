"""SSE streaming: exact bytes, order, headers, heartbeats, micro-batching."""

from __future__ import annotations

import json
from typing import Any

from app.api import ApiSettings
from app.engine_host.mock import MockSpec
from app.orchestrator.sessions import BudgetLimits
from tests.api.conftest import FixedClock, MakeApi, parse_frames, read_frames, wait_until

EXPECTED_BODY = (
    'event: started\ndata: {"queue_position":0,"predicted_start_ms":0,"pool_id":"m0",'
    '"correlation_id":"cid-1"}\n\n'
    'event: token\ndata: {"t":"llama","i":0}\n\n'
    'event: token\ndata: {"t":" quiet","i":1}\n\n'
    'event: token\ndata: {"t":" sings","i":2}\n\n'
    'event: token\ndata: {"t":" 日本","i":3}\n\n'
    'event: token\ndata: {"t":" of","i":4}\n\n'
    'event: end\ndata: {"tokens_out":5,"decode_time_ms":0,"decode_ms":0,'
    '"finish_reason":"length"}\n\n'
).encode()


async def test_exact_bytes_order_and_headers(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0), clock=FixedClock())
    cid = {"X-Correlation-Id": "cid-1"}
    resp = await api.client.post(
        "/v1/tasks", json={"prompt": "hello", "max_tokens": 5, "seed": 3}, headers=cid
    )
    assert resp.status == 202
    task_id = (await resp.json())["task_id"]
    assert resp.headers["Location"] == f"/v1/tasks/{task_id}/stream"
    stream = await api.client.get(f"/v1/tasks/{task_id}/stream", headers=cid)
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    assert stream.headers["Cache-Control"] == "no-cache"
    assert stream.headers["X-Accel-Buffering"] == "no"
    assert stream.headers["X-Correlation-Id"] == "cid-1"
    assert "X-Budget-Tokens-Remaining" not in stream.headers
    assert await stream.read() == EXPECTED_BODY


async def test_stream_correlation_defaults_to_the_tasks(make_api: MakeApi) -> None:
    api = await make_api()
    resp = await api.client.post(
        "/v1/tasks", json={"prompt": "hi", "max_tokens": 1}, headers={"X-Correlation-Id": "abc"}
    )
    task_id = (await resp.json())["task_id"]
    stream = await api.client.get(f"/v1/tasks/{task_id}/stream")
    assert stream.headers["X-Correlation-Id"] == "abc"
    await stream.read()


async def test_metrics_frames_come_after_the_first_token(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=400), metrics_interval_s=0.01)
    task_id = await api.submit(max_tokens=40, deadline_ms=60_000)
    body = await (await api.client.get(f"/v1/tasks/{task_id}/stream")).read()
    kinds = [kind for kind, _ in parse_frames(body)]
    assert kinds[0] == "started" and kinds[1] == "token" and kinds[-1] == "end"
    assert kinds.count("token") == 40 and "metrics" in kinds
    assert set(kinds[1:-1]) == {"token", "metrics"}
    metrics = json.loads(next(d for k, d in parse_frames(body) if k == "metrics"))
    assert set(metrics) == {
        "queue_depth", "on_time_probability", "kv_warmth", "tokens_budget_remaining",
        "time_budget_remaining_ms", "cost_budget_remaining",
    }  # fmt: skip


async def test_heartbeat_while_queued_then_events(make_api: MakeApi) -> None:
    api = await make_api(
        MockSpec("m0", tokens_per_s=0, hang_after_tokens=0),
        settings=ApiSettings(sse_heartbeat_ms=30),
    )
    blocker = await api.submit(max_tokens=10)
    queued = await api.submit(max_tokens=2)
    stream = await api.client.get(f"/v1/tasks/{queued}/stream")
    beats = await read_frames(stream, 3)
    assert beats == [b": keep-alive\n\n"] * 3
    assert api.orch.task(queued).state == "queued"
    api.engines[0].spec = MockSpec("m0", tokens_per_s=0)  # the next stream does not hang
    assert (await api.client.post(f"/v1/tasks/{blocker}/cancel")).status == 204
    kinds = [kind for kind, _ in parse_frames(await stream.read())]
    assert kinds == ["started", "token", "token", "end"]


async def test_no_heartbeat_lines_by_default(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=50))
    task_id = await api.submit(max_tokens=5)
    body = await (await api.client.get(f"/v1/tasks/{task_id}/stream")).read()
    assert b": keep-alive" not in body


async def test_micro_batching_coalesces_tokens(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0), settings=ApiSettings(sse_microbatch_ms=50))
    task_id = await api.submit(max_tokens=20, seed=3)
    frames = parse_frames(await (await api.client.get(f"/v1/tasks/{task_id}/stream")).read())
    tokens = [json.loads(d) for k, d in frames if k == "token"]
    assert len(tokens) < 20
    assert tokens[0]["i"] == 0
    assert json.loads(frames[-1][1])["tokens_out"] == 20
    assert "".join(t["t"] for t in tokens).startswith("llama quiet sings 日本 of")


async def test_micro_batch_index_is_the_first_token_of_the_batch(make_api: MakeApi) -> None:
    api = await make_api(
        MockSpec("m0", tokens_per_s=40), settings=ApiSettings(sse_microbatch_ms=60)
    )
    task_id = await api.submit(max_tokens=12)
    frames = parse_frames(await (await api.client.get(f"/v1/tasks/{task_id}/stream")).read())
    tokens = [json.loads(d) for k, d in frames if k == "token"]
    assert 1 < len(tokens) < 12
    words = [len(t["t"].split()) for t in tokens]
    assert [t["i"] for t in tokens] == [sum(words[:n]) for n in range(len(tokens))]


async def test_unknown_stream_404_and_second_reader_409(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0, hang_after_tokens=1))
    resp = await api.client.get("/v1/tasks/nope/stream")
    assert resp.status == 404 and (await resp.json())["code"] == "NOT_FOUND"
    task_id = await api.submit(max_tokens=5)
    first = await api.client.get(f"/v1/tasks/{task_id}/stream")
    await read_frames(first, 2)
    second = await api.client.get(f"/v1/tasks/{task_id}/stream")
    assert second.status == 409 and (await second.json())["code"] == "CONFLICT"
    first.close()


async def test_budget_headers_when_the_session_has_budgets(make_api: MakeApi) -> None:
    api = await make_api(
        MockSpec("m0", tokens_per_s=0, hang_after_tokens=0),
        budgets=BudgetLimits(tokens=1000, time_ms=60_000),
    )
    task_id = await api.submit(max_tokens=3, session_id="s1")
    stream = await api.client.get(f"/v1/tasks/{task_id}/stream")
    assert stream.headers["X-Budget-Tokens-Remaining"] == "1000"
    assert stream.headers["X-Budget-Time-Remaining-Ms"] == "60000"
    await api.client.post(f"/v1/tasks/{task_id}/cancel")
    assert parse_frames(await stream.read())[-1][0] == "end"
    await wait_until(lambda: api.orch.live_task_count() == 0)


async def test_one_request_form_answers_with_the_stream(make_api: MakeApi) -> None:
    """POST /v1/tasks with Accept: text/event-stream streams at once (no 202, no GET)."""
    api = await make_api(MockSpec("m0", tokens_per_s=0), clock=FixedClock())
    headers = {"X-Correlation-Id": "cid-1", "Accept": "text/event-stream"}
    body = {"prompt": "hello", "max_tokens": 5, "seed": 3}
    resp = await api.client.post("/v1/tasks", json=body, headers=headers)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    task_id = resp.headers["X-Orch-Task-Id"]
    assert resp.headers["Location"] == f"/v1/tasks/{task_id}/stream"
    assert await resp.read() == EXPECTED_BODY
    done = await api.client.get(f"/v1/tasks/{task_id}")
    assert (await done.json())["state"] == "done"
    plain = await api.client.post("/v1/tasks", json=body)
    assert plain.status == 202  # the two-step form stays the default


def test_frames_hold_the_compact_utf8_json_of_their_data() -> None:
    from app.api.render import json_bytes
    from app.api.sse import frame

    samples: list[dict[Any, object]] = [
        {"t": 'Hé 🦙 世界\n"q"\u2028', "i": 3},
        {"x": {"tool_calls": [{"id": "c1", "arguments": '{"a": 1}'}]}, "p": 0.1, "n": None},
        {1: "a non-string key"},  # orjson refuses it: the json fallback
    ]
    for data in samples:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        assert json_bytes(data) == text.encode()
        assert frame("token", data) == f"event: token\ndata: {text}\n\n".encode()
