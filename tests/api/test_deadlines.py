"""deadline_ms over HTTP: DEADLINE_UNMET at admission, a terminal error frame later."""

from __future__ import annotations

import json

from app.engine_host.mock import MockSpec
from tests.api.conftest import MakeApi, parse_frames, wait_until


async def test_an_unmeetable_deadline_is_refused_with_deadline_unmet(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=100))
    warm = await api.submit(max_tokens=5)
    await (await api.client.get(f"/v1/tasks/{warm}/stream")).read()
    await wait_until(lambda: api.orch.live_task_count() == 0)
    resp = await api.client.post(
        "/v1/tasks", json={"prompt": "x", "max_tokens": 200, "deadline_ms": 100}
    )
    body = await resp.json()
    assert resp.status == 400 and body["code"] == "DEADLINE_UNMET"
    assert body["message"].startswith("deadline_ms 100 cannot be met: pool m0 predicts")
    assert body["retriable"] is False and body["pool_id"] == "m0"


async def test_a_deadline_passing_while_queued_ends_the_stream_with_an_error(
    make_api: MakeApi,
) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0, hang_after_tokens=0))
    await api.submit(max_tokens=5)  # holds the only slot
    queued = await api.submit(max_tokens=5, deadline_ms=100)
    frames = parse_frames(await (await api.client.get(f"/v1/tasks/{queued}/stream")).read())
    assert [kind for kind, _ in frames] == ["error"]
    error = json.loads(frames[0][1])
    assert error["code"] == "DEADLINE_UNMET" and error["retriable"] is False
    assert "passed while the task was queued" in error["message"]
    view = await (await api.client.get(f"/v1/tasks/{queued}")).json()
    assert view["state"] == "failed" and view["error"]["code"] == "DEADLINE_UNMET"


async def test_a_deadline_passing_while_running_ends_the_stream_with_an_error(
    make_api: MakeApi,
) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0, hang_after_tokens=2))
    task = await api.submit(max_tokens=50, deadline_ms=200)
    frames = parse_frames(await (await api.client.get(f"/v1/tasks/{task}/stream")).read())
    assert [kind for kind, _ in frames] == ["started", "token", "token", "error"]
    assert json.loads(frames[-1][1])["code"] == "DEADLINE_UNMET"
    await wait_until(lambda: api.orch.live_task_count() == 0)


async def test_the_openapi_document_describes_deadline_ms(make_api: MakeApi) -> None:
    api = await make_api()
    doc = await (await api.client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert "DEADLINE_UNMET" in schemas["TaskRequest"]["properties"]["deadline_ms"]["description"]
    codes = schemas["ErrorCode"]["enum"]
    assert "DEADLINE_UNMET" in codes
    create = doc["paths"]["/v1/tasks"]["post"]["responses"]["400"]["description"]
    assert "DEADLINE_UNMET" in create
