"""Browser-borne attacks: DNS rebinding (Host), foreign Origins, CORS only when listed."""

from __future__ import annotations

import pytest

from app.api import ApiSettings
from tests.api.conftest import MakeApi

TOKEN = "lan-token-1234"


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8080", "127.0.0.1:9", "127.9.9.9", "[::1]:8080", "[::1]"]
)
async def test_loopback_hosts_are_served(make_api: MakeApi, host: str) -> None:
    api = await make_api()
    assert (await api.client.get("/v1/pools", headers={"Host": host})).status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "192.168.1.4:8080", "x"])
async def test_foreign_hosts_are_refused_on_loopback(make_api: MakeApi, host: str) -> None:
    api = await make_api()
    for method, path in (("GET", "/v1/pools"), ("POST", "/v1/tasks"), ("GET", "/metrics")):
        resp = await api.client.request(method, path, headers={"Host": host})
        assert resp.status == 403
        assert (await resp.json())["code"] == "FORBIDDEN_HOST"


async def test_any_host_is_served_on_a_lan_bind(make_api: MakeApi) -> None:
    settings = ApiSettings(bind_host="0.0.0.0", auth_token=TOKEN)
    api = await make_api(settings=settings)
    headers = {"Host": "orch.lan:8080", "Authorization": f"Bearer {TOKEN}"}
    assert (await api.client.get("/v1/pools", headers=headers)).status == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://192.168.1.9:3000"])
async def test_state_changes_from_foreign_origins_are_refused(
    make_api: MakeApi, origin: str
) -> None:
    api = await make_api()
    headers = {"Origin": origin}
    resp = await api.client.post("/v1/tasks", json={"prompt": "x"}, headers=headers)
    assert resp.status == 403 and (await resp.json())["code"] == "FORBIDDEN_ORIGIN"
    assert (await api.client.delete("/v1/sessions/s", headers=headers)).status == 403
    assert (await api.client.post("/v1/pools/m0/drain", headers=headers)).status == 403
    read = await api.client.get("/v1/pools", headers=headers)
    assert read.status == 200
    assert "Access-Control-Allow-Origin" not in read.headers


async def test_loopback_origin_may_change_state_without_cors_headers(make_api: MakeApi) -> None:
    api = await make_api()
    resp = await api.client.post(
        "/v1/tasks",
        json={"prompt": "x", "max_tokens": 1},
        headers={"Origin": "http://localhost:5173"},
    )
    assert resp.status == 202
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_listed_origins_get_cors_and_preflight(make_api: MakeApi) -> None:
    origin = "https://ui.example"
    api = await make_api(settings=ApiSettings(cors_origins=(origin,)))
    resp = await api.client.post(
        "/v1/tasks", json={"prompt": "x", "max_tokens": 1}, headers={"Origin": origin}
    )
    assert resp.status == 202
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    assert "X-Correlation-Id" in resp.headers["Access-Control-Expose-Headers"]
    pre = await api.client.options(
        "/v1/tasks",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    assert pre.status == 204
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    assert pre.headers["Access-Control-Allow-Origin"] == origin
    foreign = await api.client.options(
        "/v1/tasks",
        headers={"Origin": "https://other.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in foreign.headers
