"""What a client receives matches what the server reports: after a cancel, and for a
reader who opens a stream late."""

from __future__ import annotations

import asyncio
import json

from app.engine_host.mock import MockSpec
from tests.api.conftest import MakeApi, parse_frames, read_frames


async def test_after_a_cancel_end_counts_the_token_frames_sent(make_api: MakeApi) -> None:
    api = await make_api(MockSpec("m0", tokens_per_s=0))
    for _ in range(5):
        task = await api.submit(max_tokens=2000)
        stream = await api.client.get(f"/v1/tasks/{task}/stream")
        head = await read_frames(stream, 3)
        assert (await api.client.post(f"/v1/tasks/{task}/cancel")).status == 204
        frames = parse_frames(b"".join(head) + await stream.read())
        tokens = [data for kind, data in frames if kind == "token"]
        end = json.loads(frames[-1][1])
        assert frames[-1][0] == "end" and end["finish_reason"] == "canceled"
        assert end["tokens_out"] == len(tokens)
        view = await (await api.client.get(f"/v1/tasks/{task}")).json()
        assert view["tokens_out"] == len(tokens)


async def test_a_late_reader_sees_started_and_end_matching_its_tokens(make_api: MakeApi) -> None:
    api = await make_api(
        MockSpec("m0", tokens_per_s=0), unopened_stream_timeout_s=0.2, stream_start_grace_s=0.02
    )
    task = await api.submit(max_tokens=200)
    await asyncio.sleep(0.5)  # nobody opened the stream: the task was canceled
    frames = parse_frames(await (await api.client.get(f"/v1/tasks/{task}/stream")).read())
    tokens = [data for kind, data in frames if kind == "token"]
    assert [kind for kind, _ in frames] == ["started", "end"]
    assert json.loads(frames[-1][1])["tokens_out"] == len(tokens) == 0
