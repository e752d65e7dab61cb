"""The ``openai`` SDK against ``llama-orch serve`` on llama-server with the demo model:
JSON-schema and JSON-object output constrained by the engine's grammar, logprobs from the
engine, and a mock pool beside it that refuses what it cannot do.

llama-server (--jinja) puts the chat template's generation prompt in front of the
grammar; with the demo model's ChatML prompt ("<|im_start|>assistant\n"), and even with
"assistant:", this build fails to set that grammar up ("Failed to initialize samplers":
the demo vocabulary's pieces), so the pool runs the model with a chat template file whose
generation prompt is "A:".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from app.engine_host.demo_model import write_demo_model
from tests.integration.support import Served, serve

pytestmark = pytest.mark.engine

TEMPLATE = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'A:' }}{% endif %}"
)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 0, "maximum": 9},
        "color": {"enum": ["red", "green", "blue"]},
        "ok": {"type": "boolean"},
    },
    "required": ["n", "color", "ok"],
    "additionalProperties": False,
}
HI: Any = [{"role": "user", "content": "Describe a thing."}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("home")
    model = write_demo_model(home / "demo.gguf")
    template = home / "plain.jinja"
    template.write_text(TEMPLATE)
    pools = (
        f'[[pools]]\nid = "demo"\nengine = "llamacpp"\nmodel = "file:{model}"\n'
        'device_mask = "cpu"\ndemo = true\nslots = 2\nctx = 2048\n'
        f'extra_args = ["--chat-template-file", "{template}"]\n\n'
        '[[pools]]\nid = "m0"\nengine = "mock"\nmodel = "mock-a"\ndevice_mask = "0"\n'
    )
    with serve(home, pools, top="allow_cpu_inference = true\n") as server:
        yield server


def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=served.base + "/v1", api_key=served.token, max_retries=0, timeout=60
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_output_parses_and_validates(served: Served, seed: int) -> None:
    answer = client(served).chat.completions.create(
        model="demo",
        messages=HI,
        max_tokens=120,
        seed=seed,
        temperature=1.0,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}},
    )
    text = answer.choices[0].message.content or ""
    jsonschema.validate(json.loads(text), SCHEMA)
    assert answer.choices[0].finish_reason == "stop"


def test_json_schema_output_streamed(served: Served) -> None:
    stream = client(served).chat.completions.create(
        model="demo",
        messages=HI,
        max_tokens=120,
        seed=9,
        stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), SCHEMA)


def test_json_object_output_parses(served: Served) -> None:
    answer = client(served).chat.completions.create(
        model="demo", messages=HI, max_tokens=200, seed=4, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)


def test_logprobs_come_from_the_engine(served: Served) -> None:
    answer = client(served).chat.completions.create(
        model="demo", messages=HI, max_tokens=3, seed=5, logprobs=True, top_logprobs=2
    )
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert len(logprobs.content) == 3
    assert all(len(item.top_logprobs) == 2 and item.logprob <= 0 for item in logprobs.content)
    assert "".join(item.token for item in logprobs.content) == answer.choices[0].message.content


def test_sampling_parameters_are_accepted_by_the_engine(served: Served) -> None:
    answer = client(served).chat.completions.create(
        model="demo",
        messages=HI,
        max_tokens=4,
        seed=3,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={"5": -100},
        stop=["\n\n"],
        extra_body={"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1},
    )
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_the_mock_pool_refuses_a_json_schema_by_name(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(served).chat.completions.create(
            model="mock-a", messages=HI, response_format={"type": "json_object"}
        )
    assert caught.value.param == "response_format"
    models = {m.id: m.model_extra or {} for m in client(served).models.list()}
    assert models["demo"]["capabilities"] == {
        "json_schema": True,
        "tools": False,  # the demo model's chat template has no tool support
        "logprobs": True,
    }
    assert models["demo"]["context_length"] == 2048
    assert models["mock-a"]["capabilities"]["json_schema"] is False


def test_tools_on_a_model_whose_template_cannot_do_them_are_refused(served: Served) -> None:
    tool: Any = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client(served).chat.completions.create(
            model="demo", messages=HI, tools=[tool], tool_choice="required"
        )
    assert caught.value.param == "tools"
    assert "chat template" in caught.value.message


# ---- a second client library: LangChain's ChatOpenAI -----------------------------------


def chat_model(served: Served, **more: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model="demo",
        base_url=served.base + "/v1",
        api_key=served.token,
        max_retries=0,
        timeout=60,
        **more,
    )


def test_langchain_chats(served: Served) -> None:
    reply = chat_model(served, max_tokens=5, seed=2).invoke("Hello")
    assert isinstance(reply.content, str) and reply.content
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 5


def test_langchain_structured_output_follows_the_schema(served: Served) -> None:
    schema = {"title": "thing", "description": "A thing", **SCHEMA}
    structured = chat_model(served, max_tokens=120, seed=6).with_structured_output(
        schema, method="json_schema"
    )
    result = structured.invoke("Describe a thing.")
    jsonschema.validate(result, SCHEMA)
