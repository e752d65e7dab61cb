"""The OpenAI-compatible endpoints over mock pools: chunks, bodies, errors, cancel, pipeline."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from app.api import ApiServer, ApiSettings
from app.api.openai.wire import ChatCompletion, ChatCompletionChunk, Completion, ModelList
from app.api.state import STREAMS
from app.engine_host.mock import MockEngine, MockSpec, MockStream, mock_token
from app.orchestrator.guardrails import estimate_prompt_tokens
from app.orchestrator.ports import EngineRequest
from tests.api.conftest import Api, MakeApi, read_frames, started_orch, wait_until

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TOKEN = "s3cret-token-value-123"
HI = [{"role": "user", "content": "hi"}]


class RecordingEngine(MockEngine):
    """A mock engine that keeps every request it is asked to decode."""

    requests: list[EngineRequest]

    async def open_stream(self, request: EngineRequest) -> MockStream:
        self.requests = [*getattr(self, "requests", []), request]
        return await super().open_stream(request)


def chat(max_tokens: int | None = 3, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "mock-a", "messages": HI, **more}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def data_lines(body: bytes) -> list[str]:
    """Return the ``data:`` payloads of an SSE body, in order (comments skipped)."""
    out = []
    for block in body.decode().split("\n\n"):
        if block.startswith("data: "):
            out.append(block.removeprefix("data: "))
        else:
            assert not block or block.startswith(":"), block
    return out


def expected_tokens(seed: int, key: str, count: int) -> list[str]:
    return [mock_token(seed, key, i) for i in range(count)]


async def _api(make_api: MakeApi, **spec: Any) -> Api:
    spec.setdefault("tokens_per_s", 0)
    return await make_api(MockSpec("m0", model="mock-a", **spec))


# ---- models ------------------------------------------------------------------------


async def test_models_list_each_model_once_with_its_pools(make_api: MakeApi) -> None:
    api = await make_api(
        MockSpec("m1", model="mock-b"), MockSpec("m0", model="mock-a"), MockSpec("m2", "mock-a")
    )
    resp = await api.client.get("/v1/models")
    assert resp.status == 200
    body = await resp.json()
    ModelList.model_validate(body)
    assert [(m["id"], m["pools"], m["owned_by"]) for m in body["data"]] == [
        ("mock-a", ["m0", "m2"], "llama-orch"),
        ("mock-b", ["m1"], "llama-orch"),
    ]
    one = await api.client.get("/v1/models/mock-b")
    assert (await one.json())["pools"] == ["m1"]
    missing = await api.client.get("/v1/models/nope")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "model_not_found"


# ---- streaming -----------------------------------------------------------------------


async def test_chat_stream_chunks_exact_bytes_and_headers(make_api: MakeApi) -> None:
    api = await _api(make_api)
    resp = await api.client.post(
        CHAT, json=chat(seed=3, stream=True), headers={"X-Correlation-Id": "cid-7"}
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["X-Correlation-Id"] == "cid-7"
    assert resp.headers["X-Orch-Pool-Id"] == "m0"
    task_id = resp.headers["X-Orch-Task-Id"]
    lines = data_lines(await resp.read())
    created = json.loads(lines[0])["created"]
    head = (
        f'{{"id":"chatcmpl-{task_id}","object":"chat.completion.chunk","created":{created},'
        '"model":"mock-a","system_fingerprint":null,"choices":[{"index":0,"delta":'
    )
    words = expected_tokens(3, "user:hi", 3)
    assert lines == [
        head + '{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}',
        *[
            head + f'{{"content":{json.dumps(w, ensure_ascii=False)}}},'
            '"logprobs":null,"finish_reason":null}]}'
            for w in words
        ],
        head + '{},"logprobs":null,"finish_reason":"length"}]}',
        "[DONE]",
    ]
    for line in lines[:-1]:
        ChatCompletionChunk.model_validate_json(line)
    view = api.orch.task(task_id)
    assert (view.api, view.state, view.correlation_id, view.tokens_out) == (
        "openai", "done", "cid-7", 3
    )  # fmt: skip


async def test_stream_include_usage_ends_with_a_usage_chunk(make_api: MakeApi) -> None:
    api = await _api(make_api)
    body = chat(max_tokens=4, stream=True, stream_options={"include_usage": True})
    resp = await api.client.post(CHAT, json=body)
    chunks = [json.loads(line) for line in data_lines(await resp.read())[:-1]]
    assert all("usage" in c for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1])
    prompt_tokens = api.orch.task(resp.headers["X-Orch-Task-Id"]).tokens_in
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 4,
        "total_tokens": prompt_tokens + 4,
    }
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


async def test_completion_stream_is_text_completion_chunks(make_api: MakeApi) -> None:
    api = await _api(make_api)
    body = {"model": "m0", "prompt": "hello", "max_tokens": 3, "seed": 5, "stream": True}
    resp = await api.client.post(COMPLETIONS, json=body)
    lines = data_lines(await resp.read())
    assert lines[-1] == "[DONE]"
    chunks = [Completion.model_validate_json(line) for line in lines[:-1]]
    assert [c.choices[0].text for c in chunks] == [*expected_tokens(5, "hello", 3), ""]
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, None, "length"]
    assert {c.object for c in chunks} == {"text_completion"} and chunks[0].model == "mock-a"


async def test_microbatched_tokens_keep_the_text(make_api: MakeApi) -> None:
    api = await make_api(
        MockSpec("m0", model="mock-a", tokens_per_s=2000),
        settings=ApiSettings(sse_microbatch_ms=20),
    )
    resp = await api.client.post(CHAT, json=chat(max_tokens=40, seed=1, stream=True))
    chunks = [json.loads(line) for line in data_lines(await resp.read())[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "".join(expected_tokens(1, "user:hi", 40))
    assert len(chunks) < 40


# ---- whole answers -----------------------------------------------------------------------


async def test_chat_whole_answer_with_usage(make_api: MakeApi) -> None:
    api = await _api(make_api)
    resp = await api.client.post(CHAT, json=chat(max_tokens=5, seed=9))
    assert resp.status == 200 and resp.content_type == "application/json"
    body = ChatCompletion.model_validate(await resp.json())
    task_id = resp.headers["X-Orch-Task-Id"]
    assert body.id == f"chatcmpl-{task_id}" and body.model == "mock-a"
    assert body.choices[0].message.content == "".join(expected_tokens(9, "user:hi", 5))
    assert body.choices[0].finish_reason == "length"
    tokens_in = api.orch.task(task_id).tokens_in
    assert (body.usage.prompt_tokens, body.usage.completion_tokens) == (tokens_in, 5)
    assert body.usage.total_tokens == tokens_in + 5


async def test_completion_whole_answer(make_api: MakeApi) -> None:
    api = await _api(make_api)
    body = {"model": "mock-a", "prompt": ["hello"], "max_tokens": 2, "seed": 5}
    resp = await api.client.post(COMPLETIONS, json=body)
    answer = Completion.model_validate(await resp.json())
    assert answer.object == "text_completion" and answer.usage is not None
    assert answer.choices[0].text == "".join(expected_tokens(5, "hello", 2))


async def test_without_a_limit_the_answer_may_fill_the_context(make_api: MakeApi) -> None:
    api = await _api(make_api, ctx=40)
    resp = await api.client.post(COMPLETIONS, json={"model": "mock-a", "prompt": "x" * 40})
    usage = (await resp.json())["usage"]
    assert usage["completion_tokens"] == 40 - estimate_prompt_tokens(40) == 30


# ---- parameters ----------------------------------------------------------------------


async def test_parameters_pass_through_and_hints_are_ignored(make_api: MakeApi) -> None:
    api = await make_api(
        MockSpec("m0", model="mock-a", tokens_per_s=0), engine_class=RecordingEngine
    )
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    body = {
        "model": "mock-a",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": parts},
        ],
        "max_completion_tokens": 2, "max_tokens": 9, "temperature": 0.2, "seed": 11,
        "stop": "END", "n": 1, "top_p": 0.5, "user": "ann", "logit_bias": {}, "tools": [],
        "frequency_penalty": 0, "stream": False, "stream_options": None,
    }  # fmt: skip
    resp = await api.client.post(CHAT, json=body)
    assert resp.status == 200, await resp.text()
    sent = api.engines[0].requests[-1]  # type: ignore[attr-defined]
    assert [(m.role, m.content) for m in sent.messages] == [("system", "be brief"), ("user", "ab")]
    assert (sent.max_tokens, sent.temperature, sent.seed, list(sent.stop)) == (2, 0.2, 11, ["END"])
    assert sent.options == {"top_p": 0.5, "frequency_penalty": 0, "logit_bias": {}, "tools": []}
    plain = {"model": "mock-a", "prompt": "p", "max_tokens": 1, "stop": ["a", "b"]}
    assert (await api.client.post(COMPLETIONS, json=plain)).status == 200
    sent = api.engines[0].requests[-1]  # type: ignore[attr-defined]
    assert (sent.prompt, sent.messages, list(sent.stop)) == ("p", None, ["a", "b"])


async def test_priority_placement_and_pool_ids_select_the_pool(make_api: MakeApi) -> None:
    api = await make_api(
        MockSpec("m0", model="mock-a", tokens_per_s=0),
        MockSpec("m1", model="mock-a", tokens_per_s=0),
    )
    pinned = chat(priority="batch", placement={"mode": "pin", "pin_pool_id": "m1"})
    resp = await api.client.post(CHAT, json=pinned)
    view = api.orch.task(resp.headers["X-Orch-Task-Id"])
    assert (resp.headers["X-Orch-Pool-Id"], view.pool_id, view.priority) == ("m1", "m1", "batch")
    by_pool = await api.client.post(CHAT, json={**chat(), "model": "m0"})
    assert by_pool.headers["X-Orch-Pool-Id"] == "m0"
    assert (await by_pool.json())["model"] == "mock-a"
    decisions = api.orch.recent_decisions(5)
    assert {d.task_id for d in decisions} >= {view.task_id}


async def test_refusals_in_openai_shape(make_api: MakeApi) -> None:
    api = await _api(make_api)
    cases: list[tuple[str, Any, int, str, str | None]] = [
        (CHAT, {"model": "nope", "messages": HI}, 404, "model_not_found", "model"),
        (CHAT, chat(n=2), 400, "invalid_params", "n"),
        (CHAT, chat(temperature=7), 400, "invalid_params", "temperature"),
        (CHAT, {"model": "mock-a"}, 400, "invalid_params", "messages"),
        (CHAT, {"model": "mock-a", "messages": [{"role": "function", "content": "x"}]}, 400,
         "invalid_params", "messages.0.role"),
        (COMPLETIONS, {"model": "mock-a", "prompt": ["a", "b"]}, 400, "invalid_params", "prompt"),
        (COMPLETIONS, [1, 2], 400, "invalid_params", None),
        (COMPLETIONS, None, 400, "invalid_params", None),
    ]  # fmt: skip
    for path, body, status, code, param in cases:
        resp = await api.client.post(path, json=body)
        error = (await resp.json())["error"]
        assert (resp.status, error["code"], error["param"]) == (status, code, param), body
        assert error["type"] == "invalid_request_error" and error["message"]
    assert (
        "only n=1 is supported"
        in (await (await api.client.post(CHAT, json=chat(n=3))).json())["error"]["message"]
    )
    big = await api.client.post(CHAT, data=b"x" * (2 << 20))
    assert big.status == 413 and (await big.json())["error"]["type"] == "invalid_request_error"
    wrong_method = await api.client.get(CHAT)
    assert wrong_method.status == 405 and wrong_method.headers["Allow"] == "POST"


async def test_auth_refusals_use_openai_shape_only_on_openai_paths(make_api: MakeApi) -> None:
    api = await make_api(settings=ApiSettings(auth_token=TOKEN))
    for method, path in [("GET", "/v1/models"), ("POST", CHAT), ("POST", COMPLETIONS)]:
        resp = await api.client.request(method, path, json=chat())
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        error = (await resp.json())["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "missing_token")
        assert "Authorization: Bearer" in error["message"]
        bad = await api.client.request(method, path, headers={"Authorization": "Bearer x"})
        assert (await bad.json())["error"]["code"] == "bad_token"
    orchqueue = await api.client.get("/v1/pools")
    assert (await orchqueue.json())["code"] == "MISSING_TOKEN"
    good = await api.client.get("/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
    assert good.status == 200


async def test_foreign_origin_is_refused_in_openai_shape(make_api: MakeApi) -> None:
    api = await _api(make_api)
    resp = await api.client.post(CHAT, json=chat(), headers={"Origin": "https://evil.example"})
    assert resp.status == 403
    assert (await resp.json())["error"]["type"] == "permission_error"


async def test_full_queue_is_429_with_retry_after(make_api: MakeApi) -> None:
    api = await make_api(
        MockSpec("m0", model="mock-a", tokens_per_s=0, hang_after_tokens=0), queue_capacity=1
    )
    await api.submit(max_tokens=5)
    await api.submit(max_tokens=5)
    resp = await api.client.post(CHAT, json=chat())
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1 and int(resp.headers["X-Backoff-Ms"]) > 0
    error = (await resp.json())["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "admission_reject")


async def test_unready_pool_is_503(make_api: MakeApi) -> None:
    api = await _api(make_api, start_delay_ms=60_000)
    resp = await api.client.post(COMPLETIONS, json={"model": "mock-a", "prompt": "x"})
    assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
    error = (await resp.json())["error"]
    assert (error["type"], error["code"]) == ("server_error", "pool_unready")


# ---- failures and cancel -----------------------------------------------------------------


async def test_engine_failure_mid_stream_ends_with_an_error_chunk(make_api: MakeApi) -> None:
    api = await _api(make_api, fail_after_tokens=2)
    resp = await api.client.post(CHAT, json=chat(max_tokens=10, stream=True))
    lines = data_lines(await resp.read())
    assert lines[-1] == "[DONE]"
    assert json.loads(lines[-2]) == {
        "error": {
            "message": "mock engine reported an error (injected)",
            "type": "server_error",
            "code": "internal",
            "param": None,
        }
    }
    assert len(lines) == 1 + 2 + 2  # role chunk, two tokens, error, [DONE]
    assert api.orch.task(resp.headers["X-Orch-Task-Id"]).state == "failed"


async def test_engine_failure_without_stream_is_an_error_status(make_api: MakeApi) -> None:
    api = await _api(make_api, crash_after_tokens=1)
    resp = await api.client.post(CHAT, json=chat(max_tokens=10))
    assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"]["code"] == "worker_reset"
    failing = await _api(make_api, fail_after_tokens=1)
    resp = await failing.client.post(CHAT, json=chat(max_tokens=10))
    assert resp.status == 500 and (await resp.json())["error"]["type"] == "server_error"


async def test_server_side_cancel_is_never_a_silent_stop(make_api: MakeApi) -> None:
    api = await _api(make_api, hang_after_tokens=1)
    resp = await api.client.post(CHAT, json=chat(max_tokens=10, stream=True))
    task_id = resp.headers["X-Orch-Task-Id"]
    await read_frames(resp, 2)
    assert (await api.client.post(f"/v1/tasks/{task_id}/cancel")).status == 204
    lines = data_lines(await resp.read())
    assert json.loads(lines[0])["error"]["code"] == "canceled" and lines[1] == "[DONE]"
    whole = asyncio.create_task(api.client.post(CHAT, json=chat(max_tokens=10)))
    await wait_until(lambda: len(api.orch.tasks()) == 2 and api.orch.live_task_count() == 1)
    live = next(t for t in api.orch.tasks() if t.state not in ("canceled", "done"))
    api.orch.cancel(live.task_id)
    answer = await whole
    assert answer.status == 503 and (await answer.json())["error"]["code"] == "canceled"


async def test_closing_the_stream_cancels_the_running_task(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", model="mock-a", tokens_per_s=200, ctx=200_000))
    resp = await api.client.post(CHAT, json=chat(max_tokens=10_000, stream=True))
    await read_frames(resp, 3)
    resp.close()
    task_id = resp.headers["X-Orch-Task-Id"]
    await wait_until(lambda: api.orch.task(task_id).state == "canceled")
    engine = api.engines[0]
    await wait_until(lambda: engine.closed_streams == engine.opened_streams == 1)
    assert len(api.app[STREAMS]) == 0


async def test_disconnect_while_queued_cancels_stream_and_whole_requests(
    make_api: MakeApi,
) -> None:
    api = await _api(make_api, hang_after_tokens=0)
    blocker = await api.submit(max_tokens=5)
    # nobody reads the blocker: it reaches the engine after the start grace
    await wait_until(lambda: api.orch.task(blocker).state == "streaming")
    streamed = await api.client.post(CHAT, json=chat(stream=True))
    queued = streamed.headers["X-Orch-Task-Id"]
    assert api.orch.task(queued).state == "queued"
    streamed.close()
    await wait_until(lambda: api.orch.task(queued).state == "canceled")
    whole = asyncio.create_task(api.client.post(CHAT, json=chat()))
    await wait_until(lambda: api.orch.live_task_count() == 2)
    waiting = next(t.task_id for t in api.orch.tasks() if t.state == "queued")
    whole.cancel()
    await wait_until(lambda: api.orch.task(waiting).state == "canceled")
    assert api.engines[0].opened_streams == 1  # neither reached the engine
    assert api.orch.task(blocker).state == "streaming"
    assert api.orch.pool_view("m0").queue.interactive == 0


async def test_shutdown_ends_a_live_stream_with_an_error_chunk(make_api: MakeApi) -> None:
    api = await _api(make_api, hang_after_tokens=1)
    resp = await api.client.post(CHAT, json=chat(max_tokens=10, stream=True))
    await read_frames(resp, 2)
    await api.app[STREAMS].close_all()
    lines = data_lines(await resp.read())
    error = json.loads(lines[0])["error"]
    assert (error["code"], error["message"]) == ("pool_unavailable", "server shutting down")
    assert lines[1] == "[DONE]"
    await wait_until(lambda: api.orch.task(resp.headers["X-Orch-Task-Id"]).state == "canceled")


async def test_a_real_server_notices_a_client_leaving_a_whole_request() -> None:
    """The production server does not cancel handlers: the disconnect is polled for."""
    orch, engines = await started_orch([MockSpec("m0", model="mock-a", hang_after_tokens=0)])
    server = ApiServer(orch, ApiSettings(bind_port=0))
    await server.start()
    try:
        async with aiohttp.ClientSession(server.url) as session:
            blocker = asyncio.create_task(session.post(CHAT, json=chat()))
            await wait_until(lambda: orch.live_task_count() == 1)
            queued = asyncio.create_task(session.post(CHAT, json=chat()))
            await wait_until(lambda: orch.live_task_count() == 2)
            waiting = next(t.task_id for t in orch.tasks() if t.state == "queued")
            queued.cancel()
            await wait_until(lambda: orch.task(waiting).state == "canceled")
            blocker.cancel()
            await wait_until(lambda: orch.live_task_count() == 0)
        assert engines[0].opened_streams == 1
    finally:
        await server.stop()
        await orch.shutdown(deadline_s=0.1)
