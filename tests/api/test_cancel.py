"""Cancel over HTTP: queued and running tasks, idempotence, races."""

from __future__ import annotations

import asyncio
import json
import random

from app.engine_host.mock import MockSpec
from tests.api.conftest import MakeApi, parse_frames, read_frames, wait_until


async def test_cancel_queued_leaves_the_queue_at_once(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0, hang_after_tokens=0))
    await api.submit(max_tokens=5)
    queued = await api.submit(max_tokens=5)
    assert api.orch.pool_view("m0").queue.interactive == 1
    resp = await api.client.post(f"/v1/tasks/{queued}/cancel")
    assert resp.status == 204 and await resp.read() == b""
    assert api.orch.pool_view("m0").queue.interactive == 0
    frames = parse_frames(await (await api.client.get(f"/v1/tasks/{queued}/stream")).read())
    assert frames == [
        ("end", '{"tokens_out":0,"decode_time_ms":0,"decode_ms":0,"finish_reason":"canceled"}')
    ]


async def test_cancel_running_stops_tokens_with_one_end(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0, hang_after_tokens=3))
    task_id = await api.submit(max_tokens=50)
    stream = await api.client.get(f"/v1/tasks/{task_id}/stream")
    head = await read_frames(stream, 4)
    assert [f.split(b"\n")[0] for f in head] == [b"event: started"] + [b"event: token"] * 3
    for _ in range(2):  # idempotent
        assert (await api.client.post(f"/v1/tasks/{task_id}/cancel")).status == 204
    tail = parse_frames(await stream.read())
    assert [kind for kind, _ in tail] == ["end"]
    assert json.loads(tail[0][1])["finish_reason"] == "canceled"
    await wait_until(lambda: api.engines[0].closed_streams == 1)
    assert (await api.client.get(f"/v1/tasks/{task_id}")).status == 200


async def test_cancel_unknown_is_404(make_api: MakeApi) -> None:
    api = await make_api()
    resp = await api.client.post("/v1/tasks/does-not-exist/cancel")
    assert resp.status == 404
    body = await resp.json()
    assert body["code"] == "NOT_FOUND" and "does-not-exist" in body["message"]


async def test_random_cancel_races_give_exactly_one_terminal(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0, slots=2), queue_capacity=64)
    rng = random.Random(11)
    for _ in range(40):
        task_id = await api.submit(max_tokens=rng.randint(1, 30))
        stream = await api.client.get(f"/v1/tasks/{task_id}/stream")
        if rng.random() < 0.5:
            await asyncio.sleep(0)
        cancel = asyncio.ensure_future(api.client.post(f"/v1/tasks/{task_id}/cancel"))
        frames = parse_frames(await stream.read())
        assert (await cancel).status == 204
        kinds = [kind for kind, _ in frames]
        assert sum(k in ("end", "error") for k in kinds) == 1 and kinds[-1] in ("end", "error")
        indices = [json.loads(d)["i"] for k, d in frames if k == "token"]
        assert indices == list(range(len(indices)))
        end = json.loads(frames[-1][1])
        assert end["finish_reason"] in ("canceled", "length")
        assert len(indices) <= end["tokens_out"]
    await wait_until(lambda: api.orch.live_task_count() == 0)
