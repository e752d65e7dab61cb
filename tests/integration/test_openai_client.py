"""The official ``openai`` package against ``llama-orch serve`` on loopback (a real subprocess).

Mock pools cover streaming, whole answers, usage, errors and cancel; the
llama.cpp demo model (marked ``engine``) covers real chat templates and seeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from app.engine_host.demo_model import write_demo_model
from app.engine_host.mock import mock_token
from tests.integration.support import Served, serve

MOCK_POOLS = """
[admission]
queue_capacity = 1

[engines]
decode_timeout_s = 600

[[pools]]
id = "m0"
engine = "mock"
model = "mock-a"
device_mask = "0"
mock_tokens_per_s = 400

[[pools]]
id = "stuck"
engine = "mock"
model = "mock-stuck"
device_mask = "1"
mock_hang_after_tokens = 0

[[pools]]
id = "faulty"
engine = "mock"
model = "mock-faulty"
device_mask = "2"
mock_tokens_per_s = 1000
mock_fail_after_tokens = 2
"""


def client(served: Served, api_key: str | None = None) -> openai.OpenAI:
    """Return an openai client for ``served`` that never retries on its own."""
    return openai.OpenAI(
        base_url=served.base + "/v1", api_key=api_key or served.token, max_retries=0, timeout=30
    )


@pytest.fixture(scope="module")
def mock_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("openai-mock"), MOCK_POOLS) as served:
        yield served


def words(seed: int, key: str, count: int) -> str:
    return "".join(mock_token(seed, key, i) for i in range(count))


# ---- mock pools ----------------------------------------------------------------------


def test_models_list_names_the_pools(mock_server: Served) -> None:
    models = {m.id: m for m in client(mock_server).models.list()}
    assert set(models) == {"mock-a", "mock-stuck", "mock-faulty"}
    assert models["mock-a"].owned_by == "llama-orch"
    assert (models["mock-a"].model_extra or {})["pools"] == ["m0"]
    assert client(mock_server).models.retrieve("mock-stuck").id == "mock-stuck"


def test_chat_streaming_and_whole_answers(mock_server: Served) -> None:
    api = client(mock_server)
    messages: Any = [{"role": "user", "content": "hi"}]
    stream = api.chat.completions.create(
        model="mock-a", messages=messages, max_tokens=6, seed=4, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == words(4, "user:hi", 6)
    whole = api.chat.completions.create(model="mock-a", messages=messages, max_tokens=6, seed=4)
    assert whole.object == "chat.completion" and whole.model == "mock-a"
    assert whole.choices[0].message.content == streamed
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 6
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 6


def test_completions_streaming_and_whole_answers(mock_server: Served) -> None:
    api = client(mock_server)
    stream = api.completions.create(model="m0", prompt="hello", max_tokens=5, seed=2, stream=True)
    chunks = list(stream)
    assert {c.object for c in chunks} == {"text_completion"}
    assert "".join(c.choices[0].text for c in chunks) == words(2, "hello", 5)
    whole = api.completions.create(model="mock-a", prompt="hello", max_tokens=5, seed=2)
    assert whole.choices[0].text == words(2, "hello", 5)
    assert whole.usage is not None and whole.usage.completion_tokens == 5


def test_include_usage_and_headers(mock_server: Served) -> None:
    raw = client(mock_server).chat.completions.with_raw_response.create(
        model="mock-a",
        messages=[{"role": "user", "content": "count"}],
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Correlation-Id": "client-cid-1"},
    )
    assert raw.headers["x-correlation-id"] == "client-cid-1"
    assert raw.headers["x-orch-pool-id"] == "m0"
    chunks = list(raw.parse())
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    view = mock_server.task(raw.headers["x-orch-task-id"])
    assert (view["api"], view["state"], view["correlation_id"]) == (
        "openai",
        "done",
        "client-cid-1",
    )
    assert view["identity"].startswith("token:")


def test_full_queue_is_a_rate_limit_error_with_retry_after(mock_server: Served) -> None:
    fillers = []
    for _ in range(2):
        status, admission = mock_server.call(
            "POST", "/v1/tasks", {"prompt": "fill", "model_ref": "mock-stuck", "max_tokens": 5}
        )
        assert status == 202, admission
        fillers.append(admission["task_id"])
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            client(mock_server).chat.completions.create(
                model="mock-stuck", messages=[{"role": "user", "content": "x"}]
            )
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert caught.value.code == "admission_reject"
    finally:
        for task_id in fillers:
            mock_server.call("POST", f"/v1/tasks/{task_id}/cancel")


def test_wrong_token_is_an_authentication_error(mock_server: Served) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(mock_server, api_key="wrong").models.list()
    assert caught.value.code == "bad_token"


def test_unknown_model_is_not_found(mock_server: Served) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(mock_server).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.code == "model_not_found"


def test_closing_the_stream_early_cancels_the_task(mock_server: Served) -> None:
    stream = client(mock_server).chat.completions.create(
        model="mock-a",
        messages=[{"role": "user", "content": "a long answer"}],
        max_tokens=3000,
        stream=True,
    )
    task_id = stream.response.headers["x-orch-task-id"]
    first = [next(stream), next(stream), next(stream)]
    assert first[-1].choices[0].delta.content
    stream.close()
    view = mock_server.wait_for_state(task_id, "canceled")
    assert 0 < view["tokens_out"] < 3000


def test_engine_failure_mid_stream_is_an_api_error(mock_server: Served) -> None:
    stream = client(mock_server).chat.completions.create(
        model="mock-faulty", messages=[{"role": "user", "content": "x"}], max_tokens=9, stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert len(received) == 3 and received[0] == ""  # the role chunk, then two tokens
    assert "mock engine reported an error" in caught.value.message
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "internal"


# ---- the llama.cpp demo model ------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("openai-demo")
    model = write_demo_model(home / "demo.gguf")
    pools = (
        f'[[pools]]\nid = "demo"\nengine = "llamacpp"\nmodel = "file:{model}"\n'
        'device_mask = "cpu"\nctx = 2048\ndemo = true\n'
    )
    with serve(home, pools, top="allow_cpu_inference = true", ready_within_s=90) as served:
        yield served


@pytest.mark.engine
def test_demo_model_chat_and_completions(demo_server: Served) -> None:
    api = client(demo_server)
    assert [m.id for m in api.models.list()] == ["demo"]
    messages: Any = [{"role": "user", "content": "Say something"}]
    chunks = list(
        api.chat.completions.create(model="demo", messages=messages, max_tokens=8, stream=True)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    whole = api.completions.create(model="demo", prompt="Once upon a time", max_tokens=6)
    assert whole.choices[0].text and whole.usage is not None
    streamed = list(api.completions.create(model="demo", prompt="Hi", max_tokens=4, stream=True))
    assert streamed[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.engine
def test_demo_model_seed_gives_identical_output(demo_server: Served) -> None:
    api = client(demo_server)
    messages: Any = [{"role": "user", "content": "Tell me a story"}]

    def answer(seed: int) -> str:
        reply = api.chat.completions.create(
            model="demo", messages=messages, max_tokens=16, seed=seed, temperature=1.0
        )
        return reply.choices[0].message.content or ""

    first = answer(1234)
    assert first and answer(1234) == first
    others = {answer(s) for s in (1, 2, 3)}
    assert others != {first}, "different seeds should be able to change the output"
