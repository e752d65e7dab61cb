"""Hostile bodies: JSON nested past any sane depth is a 400 naming the problem, never a 500."""

from __future__ import annotations

import logging

import pytest

from tests.api.conftest import MakeApi


@pytest.mark.parametrize("depth", [200, 900, 990, 1_000, 100_000])
@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/chat/completions", "/v1/pools/m0/reload"])
async def test_deeply_nested_json_is_a_plain_400(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture, depth: int, path: str
) -> None:
    api = await make_api()
    body = '{"prompt": ' + "[" * depth + "]" * depth + "}"
    with caplog.at_level(logging.DEBUG):
        resp = await api.client.post(path, data=body, headers={"Content-Type": "application/json"})
        text = await resp.text()
    assert resp.status == 400, text[:300]
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    if depth >= 1_000:
        assert "nested" in text and "deeper than" in text
