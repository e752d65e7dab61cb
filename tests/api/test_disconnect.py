"""Client disconnects: the engine request is aborted and nothing leaks."""

from __future__ import annotations

import asyncio

from app.api import ApiSettings
from app.api.state import STREAMS
from app.engine_host.mock import MockSpec
from app.orchestrator.contracts import Priority
from tests.api.conftest import Api, MakeApi, read_frames, wait_until


def _idle(api: Api) -> bool:
    pools = api.orch.pool_views()
    return api.orch.live_task_count() == 0 and all(
        p.slots_busy == 0 and p.queue.interactive == 0 and p.queue.batch == 0 for p in pools
    )


async def test_disconnect_mid_stream_aborts_the_engine_request(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=200, ctx=200_000))
    engine = api.engines[0]
    task_id = await api.submit(max_tokens=10_000)
    stream = await api.client.get(f"/v1/tasks/{task_id}/stream")
    frames = await read_frames(stream, 3)
    assert frames[0].startswith(b"event: started") and frames[2].startswith(b"event: token")
    stream.close()
    await wait_until(lambda: api.orch.task(task_id).state == "canceled")
    await wait_until(lambda: engine.closed_streams == engine.opened_streams == 1)
    assert api.orch.task(task_id).tokens_out < 10_000
    await wait_until(lambda: _idle(api))


async def test_disconnect_while_queued_cancels_the_queued_task(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0, hang_after_tokens=0))
    blocker = await api.submit(max_tokens=5)
    # nobody reads the blocker: it reaches the engine after the start grace
    await wait_until(lambda: api.orch.task(blocker).state == "streaming")
    queued = await api.submit(max_tokens=5)
    stream = await api.client.get(f"/v1/tasks/{queued}/stream")
    assert stream.status == 200
    stream.close()
    await wait_until(lambda: api.orch.task(queued).state == "canceled")
    assert api.engines[0].opened_streams == 1  # the queued task never reached the engine
    assert api.orch.pool_view("m0").queue.interactive == 0
    assert api.orch.task(blocker).state == "streaming"


async def test_without_cancel_on_disconnect_the_task_finishes(make_api: MakeApi) -> None:
    api = await make_api(
        MockSpec("m0", tokens_per_s=500), settings=ApiSettings(cancel_on_disconnect=False)
    )
    task_id = await api.submit(max_tokens=200)
    stream = await api.client.get(f"/v1/tasks/{task_id}/stream")
    await read_frames(stream, 2)
    stream.close()
    await wait_until(lambda: api.orch.task(task_id).state == "done")
    assert api.orch.task(task_id).tokens_out == 200
    await wait_until(lambda: _idle(api))


async def test_200_connect_and_drop_cycles_leak_nothing(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=1000, slots=2, ctx=200_000), queue_capacity=64)
    engine = api.engines[0]

    async def cycle(n: int) -> None:
        priority = Priority.BATCH if n % 2 else Priority.INTERACTIVE
        task_id = await api.submit(max_tokens=100_000, priority=priority)
        stream = await api.client.get(f"/v1/tasks/{task_id}/stream")
        await read_frames(stream, 1 + n % 3)
        stream.close()

    await cycle(0)
    await wait_until(lambda: _idle(api))
    await asyncio.sleep(0.05)
    baseline = len(asyncio.all_tasks())
    for n in range(1, 201):
        await cycle(n)
    await wait_until(lambda: _idle(api))
    await wait_until(lambda: len(asyncio.all_tasks()) <= baseline)
    assert engine.closed_streams == engine.opened_streams
    assert api.orch.counters["canceled"] == 201
    assert len(api.app[STREAMS]) == 0 and not api.app[STREAMS].drains
