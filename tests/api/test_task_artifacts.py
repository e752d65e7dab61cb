"""Finished streams leave a trace artifact (transcript + placement decision), linked
from GET /v1/tasks/{id}: over a real aiohttp server, a mock pool and a real store."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from app.api import ApiSettings, make_app
from app.api.task_artifacts import RESERVED_BYTES
from app.engine_host.artifacts import ArtifactStore
from app.engine_host.mock import MockSpec
from tests.api.conftest import parse_frames, read_frames, started_orch


async def _served(aiohttp_client: Any, tmp_path: Path, spec: MockSpec, cap: int = 1 << 20) -> Any:
    orch, _ = await started_orch((spec,))
    store = ArtifactStore(tmp_path / "artifacts", max_artifact_bytes=cap)
    client = await aiohttp_client(make_app(orch, ApiSettings(), artifacts=store))
    return orch, client


async def _artifact_of(client: Any, task_id: str) -> dict[str, Any]:
    """Poll GET /v1/tasks/{id} until it names an artifact; return GET of that artifact."""
    deadline = time.monotonic() + 15.0  # stored by a background task: allow a loaded machine
    while time.monotonic() < deadline:
        view = await (await client.get(f"/v1/tasks/{task_id}")).json()
        if view["artifact_id"] is not None:
            resp = await client.get(f"/v1/artifacts/{view['artifact_id']}")
            assert resp.status == 200
            return dict(await resp.json())
        await asyncio.sleep(0.01)
    raise AssertionError("the task never got an artifact_id")


async def test_a_streamed_task_leaves_its_transcript_and_decision(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    orch, client = await _served(aiohttp_client, tmp_path, MockSpec("m0", tokens_per_s=0))
    admitted = await (await client.post("/v1/tasks", json={"prompt": "hi", "max_tokens": 5})).json()
    task_id = admitted["task_id"]
    received = await (await client.get(f"/v1/tasks/{task_id}/stream")).read()
    art = await _artifact_of(client, task_id)
    assert art["kind"] == "trace" and art["content"]["task_id"] == task_id
    kept = parse_frames(art["content"]["transcript"].encode())
    assert kept == parse_frames(received)
    assert [k for k, _ in kept].count("token") == 5 and kept[-1][0] == "end"
    decision = art["content"]["decision"]
    assert decision["task_id"] == task_id
    assert decision == (await (await client.get("/v1/placement/decisions")).json())[0]
    assert art["content"]["truncated"] is False
    await orch.shutdown(deadline_s=0.1)


async def test_a_canceled_task_leaves_what_its_reader_got(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    spec = MockSpec("m0", tokens_per_s=0, hang_after_tokens=3)
    orch, client = await _served(aiohttp_client, tmp_path, spec)
    task_id = (await (await client.post("/v1/tasks", json={"prompt": "x"})).json())["task_id"]
    stream = await client.get(f"/v1/tasks/{task_id}/stream")
    head = b"".join(await read_frames(stream, 4))
    assert (await client.post(f"/v1/tasks/{task_id}/cancel")).status == 204
    received = head + await stream.read()
    art = await _artifact_of(client, task_id)
    kept = parse_frames(art["content"]["transcript"].encode())
    assert kept == parse_frames(received)
    assert [k for k, _ in kept] == ["started", "token", "token", "token", "end"]
    assert json.loads(kept[-1][1])["finish_reason"] == "canceled"
    assert art["content"]["decision"]["task_id"] == task_id
    await orch.shutdown(deadline_s=0.1)


async def test_a_long_transcript_stops_at_the_budget(aiohttp_client: Any, tmp_path: Path) -> None:
    cap = RESERVED_BYTES + 1000  # a 500-byte transcript budget
    orch, client = await _served(aiohttp_client, tmp_path, MockSpec("m0", tokens_per_s=0), cap)
    body = {"prompt": "hi", "max_tokens": 200}
    task_id = (await (await client.post("/v1/tasks", json=body)).json())["task_id"]
    received = await (await client.get(f"/v1/tasks/{task_id}/stream")).read()
    assert len(received) > 500
    art = await _artifact_of(client, task_id)
    assert art["content"]["truncated"] is True
    kept = art["content"]["transcript"].encode()
    assert 0 < len(kept) <= 500 and received.startswith(kept)
    await orch.shutdown(deadline_s=0.1)


async def test_without_a_store_tasks_have_no_artifact(aiohttp_client: Any) -> None:
    orch, _ = await started_orch((MockSpec("m0", tokens_per_s=0),))
    client = await aiohttp_client(make_app(orch, ApiSettings()))
    task_id = (await (await client.post("/v1/tasks", json={"prompt": "hi"})).json())["task_id"]
    await (await client.get(f"/v1/tasks/{task_id}/stream")).read()
    assert (await (await client.get(f"/v1/tasks/{task_id}")).json())["artifact_id"] is None
    doc = await (await client.get("/openapi.json")).json()
    assert "artifact_id" in doc["components"]["schemas"]["TaskView"]["properties"]
    await orch.shutdown(deadline_s=0.1)


async def test_a_streamed_openai_chat_leaves_its_chunks(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    spec = MockSpec("m0", model="mock-a", tokens_per_s=0)
    orch, client = await _served(aiohttp_client, tmp_path, spec)
    body = {"model": "mock-a", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3, "stream": True}  # fmt: skip
    resp = await client.post("/v1/chat/completions", json=body)
    received = await resp.read()
    art = await _artifact_of(client, resp.headers["X-Orch-Task-Id"])
    assert art["content"]["transcript"].encode() == received
    assert received.endswith(b"data: [DONE]\n\n")
    await orch.shutdown(deadline_s=0.1)
