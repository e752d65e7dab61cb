"""OpenAI parameters end to end with the ``openai`` SDK: exact forwarding to a recording
engine (a real aiohttp server on loopback behind an ``openai`` pool), tool-call streams,
refusals of unknown or unsupported fields, and placement that leaves out incapable pools."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
import pytest_asyncio
from aiohttp import web
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from app.api import ApiSettings, make_app
from app.engine_host.mock import MockEngine, MockSpec
from app.engine_host.openai_remote import OpenAIEngine, OpenAISpec
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.service import Orchestrator, OrchestratorConfig
from tests.api.conftest import wait_until
from tests.engine_host.conftest import serve

HI: Any = [{"role": "user", "content": "hi"}]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ARGUMENT_PIECES = ['{"', 'city":', ' "Par', 'is"}']
REFUSED_TOP_K = 99
NO_TOOLS = "tools param requires --jinja flag"
LOGPROBS = {"content": [{"token": "one", "logprob": -0.5, "bytes": [111], "top_logprobs": []}]}


def _chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-engine",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "remote-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
    }


def tool_call_chunks() -> list[dict[str, Any]]:
    """The chunks llama-server (--jinja) streams for one tool call."""
    first = {"index": 0, "id": "call_abc", "type": "function"}
    first["function"] = {"name": "get_weather", "arguments": ARGUMENT_PIECES[0]}
    rest = [{"index": 0, "function": {"arguments": piece}} for piece in ARGUMENT_PIECES[1:]]
    return [
        _chunk({"role": "assistant", "content": None}),
        _chunk({"tool_calls": [first]}),
        *[_chunk({"tool_calls": [frag]}) for frag in rest],
        _chunk({}, "tool_calls"),
    ]


def text_chunks(with_logprobs: bool) -> list[dict[str, Any]]:
    first = _chunk({"content": "one"})
    if with_logprobs:
        first["choices"][0]["logprobs"] = LOGPROBS
    return [first, _chunk({}, "stop")]


@dataclass
class RecordingEngine:
    """An OpenAI engine on loopback that records each body and answers with scripted chunks."""

    bodies: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.complete)
        app.router.add_post("/v1/completions", self.complete)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "remote-model"}]})

    async def complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if body.get("top_k") == REFUSED_TOP_K:
            error = {"error": {"code": 400, "message": NO_TOOLS, "type": "invalid_request_error"}}
            return web.json_response(error, status=400)
        chunks = tool_call_chunks() if body.get("tools") else text_chunks(body.get("logprobs"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response


@dataclass
class Served:
    engine: RecordingEngine
    orch: Orchestrator
    client: openai.AsyncOpenAI
    base: str


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Served]:
    """The app on loopback over an ``openai`` pool (the recording engine) and a mock pool
    serving the same model id (it can do neither tools nor JSON schemas)."""
    engine = RecordingEngine()
    async with serve(engine.app()) as engine_base:
        spec = OpenAISpec(pool_id="remote0", base_url=engine_base + "/v1", model="remote-model")
        mock = MockEngine(MockSpec("mock0", model="remote-model", tokens_per_s=0))
        lone = MockEngine(MockSpec("mock1", model="mock-only", tokens_per_s=0))
        orch = Orchestrator([OpenAIEngine(spec), mock, lone], OrchestratorConfig())
        await orch.start()
        pools = orch.pool_views
        await wait_until(lambda: all(v.state is PoolState.READY for v in pools()), 10)
        try:
            async with serve(make_app(orch, ApiSettings())) as base:
                client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
                yield Served(engine, orch, client, base)
                await client.close()
        finally:
            await orch.shutdown(deadline_s=0.5)


SAMPLING: dict[str, Any] = {
    "top_p": 0.9,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.25,
    "logit_bias": {"15043": -100},
    "seed": 7,
    "stop": ["END", "STOP"],
    "temperature": 0.3,
}
LLAMA_SAMPLING: dict[str, Any] = {"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}


async def test_every_sampling_parameter_reaches_the_engine_as_sent(served: Served) -> None:
    answer = await served.client.chat.completions.create(
        model="remote0",
        messages=HI,
        max_tokens=5,
        user="ann",
        metadata={"k": "v"},
        store=False,
        n=1,
        extra_body=LLAMA_SAMPLING,
        **SAMPLING,
    )
    assert answer.choices[0].message.content == "one"
    sent = served.engine.bodies[-1]
    assert {k: sent[k] for k in [*SAMPLING, *LLAMA_SAMPLING]} == {**SAMPLING, **LLAMA_SAMPLING}
    assert not {"user", "metadata", "store", "n"} & set(sent)  # hints stay here
    await served.client.completions.create(
        model="remote0", prompt="p", max_tokens=2, extra_body=LLAMA_SAMPLING, **SAMPLING
    )
    sent = served.engine.bodies[-1]
    assert sent["prompt"] == "p"
    assert {k: sent[k] for k in [*SAMPLING, *LLAMA_SAMPLING]} == {**SAMPLING, **LLAMA_SAMPLING}


async def test_response_format_and_logprobs_are_forwarded(served: Served) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema}}
    answer = await served.client.chat.completions.create(
        model="remote0", messages=HI, response_format=fmt, logprobs=True, top_logprobs=2
    )
    sent = served.engine.bodies[-1]
    assert sent["response_format"] == fmt
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    assert answer.choices[0].logprobs is not None
    assert answer.choices[0].logprobs.model_dump()["content"][0]["token"] == "one"
    stream = await served.client.chat.completions.create(
        model="remote0", messages=HI, logprobs=True, stream=True
    )
    chunks = [c async for c in stream]
    carried = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs]
    assert [lp.model_dump()["content"][0]["logprob"] for lp in carried] == [-0.5]


async def test_a_streamed_tool_call_is_assembled_by_the_sdk(served: Served) -> None:
    conversation: Any = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
    ]
    async with served.client.chat.completions.stream(
        model="remote-model", messages=conversation, tools=[WEATHER], tool_choice="auto"
    ) as stream:
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert (call.id, call.function.name) == ("call_abc", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    sent = served.engine.bodies[-1]
    assert (sent["tools"], sent["tool_choice"]) == ([WEATHER], "auto")
    assert sent["messages"][1]["tool_calls"] == conversation[1]["tool_calls"]
    assert sent["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_0"}


async def test_a_whole_tool_call_answer(served: Served) -> None:
    answer = await served.client.chat.completions.create(
        model="remote-model", messages=HI, tools=[WEATHER], tool_choice="required"
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert (call.id, call.type, call.function.name) == ("call_abc", "function", "get_weather")
    assert call.function.arguments == "".join(ARGUMENT_PIECES)


async def test_placement_leaves_out_pools_that_cannot_do_tools(served: Served) -> None:
    for _ in range(3):  # the mock pool would win ties on its own
        await served.client.chat.completions.create(
            model="remote-model", messages=HI, tools=[WEATHER]
        )
    decisions = served.orch.recent_decisions(3)
    for decision in decisions:
        assert decision.pool_id == "remote0"
        mock = next(c for c in decision.candidates if c.pool_id == "mock0")
        assert (mock.outcome, mock.filter) == ("filtered", "features")
        assert "tools" in mock.reason
        assert "features" in decision.filters_applied


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [WEATHER]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
    ],
)
async def test_a_mock_pool_refuses_what_it_cannot_do_naming_the_field(
    served: Served, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await served.client.chat.completions.create(
            model="mock-only", messages=HI, extra_body=extra
        )
    assert caught.value.param == param
    assert f"'{param}' is not supported" in caught.value.message


@pytest.mark.parametrize(
    ("route", "extra", "param"),
    [
        ("chat", {"frobnicate": 1}, "frobnicate"),
        ("chat", {"audio": {"voice": "x"}}, "audio"),
        ("completions", {"best_of": 2}, "best_of"),
        ("completions", {"tools": [WEATHER]}, "tools"),
        ("chat", {"messages": [{"role": "user", "content": "hi", "weird": 1}]}, "messages.0.weird"),
    ],
)
async def test_unknown_parameters_are_refused_by_name(
    served: Served, route: str, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        if route == "chat":
            await served.client.chat.completions.create(
                model="remote0", messages=HI, extra_body=extra
            )
        else:
            await served.client.completions.create(model="remote0", prompt="p", extra_body=extra)
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert param.rsplit(".", maxsplit=1)[-1] in caught.value.message
    assert caught.value.code in ("unsupported_parameter", "invalid_params")


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"top_p": 1.5}, "top_p", "less than or equal to 1"),
        ({"top_k": -1}, "top_k", "greater than or equal to 0"),
        ({"presence_penalty": 3}, "presence_penalty", "less than or equal to 2"),
        ({"logit_bias": {"5": 500}}, "logit_bias.5", "less than or equal to 100"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"stop": ["x" * 65]}, "stop", "at most 64"),
        ({"top_logprobs": 3}, None, "top_logprobs needs logprobs"),
        ({"tool_choice": "required"}, None, "tool_choice needs a non-empty tools list"),
        ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema is"),
    ],
)
async def test_sampling_values_are_checked_with_clear_messages(
    served: Served, extra: dict[str, Any], param: str | None, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await served.client.chat.completions.create(model="remote0", messages=HI, extra_body=extra)
    assert words in caught.value.message
    if param is not None:
        assert caught.value.param == param
    assert not served.engine.bodies


async def test_models_report_context_length_and_capabilities(served: Served) -> None:
    models = {m.id: m.model_extra or {} for m in (await served.client.models.list()).data}
    remote, mock = models["remote-model"], models["mock-only"]
    assert remote["pools"] == ["mock0", "remote0"]
    assert remote["context_length"] == 4096
    assert remote["capabilities"] == {"json_schema": True, "tools": True, "logprobs": True}
    assert mock["capabilities"] == {"json_schema": False, "tools": False, "logprobs": False}


async def test_an_engine_refusal_is_a_400_with_the_engines_reason(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await served.client.chat.completions.create(
            model="remote0", messages=HI, tools=[WEATHER], extra_body={"top_k": REFUSED_TOP_K}
        )
    assert NO_TOOLS in caught.value.message


async def test_langchain_assembles_a_tool_call(served: Served) -> None:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(
        model="remote-model",
        base_url=served.base + "/v1",
        api_key="x",
        max_retries=0,
    ).bind_tools([WEATHER], tool_choice="get_weather")
    whole = await model.ainvoke("weather in Paris?")
    assert [(c["name"], c["args"], c["id"]) for c in whole.tool_calls] == [
        ("get_weather", {"city": "Paris"}, "call_abc")
    ]
    merged: Any = None
    async for chunk in model.astream("weather in Paris?"):
        merged = chunk if merged is None else merged + chunk
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert merged.response_metadata["finish_reason"] == "tool_calls"
    sent = served.engine.bodies[-1]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


async def test_orchqueue_tasks_take_the_same_fields(served: Served) -> None:
    import aiohttp

    task = {
        "model_ref": "remote0",
        "messages": [{"role": "user", "content": "weather?"}],
        "max_tokens": 8,
        "sampling": {"top_p": 0.5, "top_k": 3, "tools": [WEATHER], "tool_choice": "auto"},
    }
    async with aiohttp.ClientSession() as http:
        accept = {"Accept": "text/event-stream"}
        async with http.post(served.base + "/v1/tasks", json=task, headers=accept) as resp:
            assert resp.status == 200, await resp.text()
            body = (await resp.read()).decode()
        bad = {**task, "model_ref": "mock-only"}
        async with http.post(served.base + "/v1/tasks", json=bad) as resp:
            assert resp.status == 400
            assert "'tools' is not supported" in (await resp.json())["message"]
    sent = served.engine.bodies[-1]
    assert (sent["top_p"], sent["top_k"], sent["tool_choice"]) == (0.5, 3, "auto")
    tokens = [json.loads(line[6:]) for line in body.splitlines() if line.startswith('data: {"t"')]
    fragments = [f for t in tokens for f in t["x"]["tool_calls"]]
    assert "".join(f["function"]["arguments"] for f in fragments) == "".join(ARGUMENT_PIECES)
    assert '"finish_reason":"tool_calls"' in body
