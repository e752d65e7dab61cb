"""Bearer auth: the route-table matrix, loopback bypass, start-up refusal, no token in logs."""

from __future__ import annotations

import hashlib
import logging
import re

import pytest
from aiohttp import web

from app.api import ApiSettings, UnsafeBind, check_bind
from app.engine_host.mock import MockSpec
from tests.api.conftest import REMOTE_HEADER, Api, MakeApi

TOKEN = "s3cret-token-value-123"
LAN_PEER = {REMOTE_HEADER: "192.168.1.20"}


def served_routes(app: web.Application) -> list[tuple[str, str]]:
    """Return (method, concrete path) for every route in the router's table."""
    out = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        out.append((route.method, re.sub(r"\{[^}]+\}", "x1", path)))
    return out


async def _call(api: Api, method: str, path: str, **headers: str) -> tuple[int, dict[str, str]]:
    resp = await api.client.request(method, path, headers=headers, json={})
    if resp.status == 401:
        body = await resp.json()
        if "error" in body:  # the OpenAI-compatible routes answer in OpenAI's shape
            body = {"code": body["error"]["code"].upper(), "hint": body["error"]["message"]}
        return 401, {**body, "www": resp.headers.get("WWW-Authenticate", "")}
    await resp.read()
    return resp.status, {}


async def test_every_route_needs_the_token(make_api: MakeApi) -> None:
    api = await make_api(settings=ApiSettings(auth_token=TOKEN))
    routes = served_routes(api.app)
    assert len(routes) >= 16 and ("GET", "/metrics") in routes
    for method, path in routes:
        status, body = await _call(api, method, path)
        assert status == 401, (method, path)
        assert body["code"] == "MISSING_TOKEN" and body["hint"] and body["www"].startswith("Bearer")
        status, body = await _call(api, method, path, Authorization="Bearer wrong")
        assert status == 401 and body["code"] == "BAD_TOKEN", (method, path)
        status, _ = await _call(api, method, path, Authorization=f"Bearer {TOKEN}")
        assert status != 401, (method, path)
    assert (await _call(api, "GET", "/v1/replicasets"))[0] == 401


async def test_non_bearer_schemes_count_as_missing(make_api: MakeApi) -> None:
    api = await make_api(settings=ApiSettings(auth_token=TOKEN))
    status, body = await _call(api, "GET", "/v1/pools", Authorization=f"Basic {TOKEN}")
    assert status == 401 and body["code"] == "MISSING_TOKEN"


async def test_auth_optional_lets_only_loopback_skip_the_token(make_api: MakeApi) -> None:
    settings = ApiSettings(auth_token=TOKEN, auth_optional=True)
    api = await make_api(settings=settings, peer=True)
    for method, path in served_routes(api.app):
        assert (await _call(api, method, path))[0] != 401, (method, path)
        lan, body = await _call(api, method, path, **LAN_PEER)
        assert lan == 401 and body["code"] == "MISSING_TOKEN", (method, path)
    ok, _ = await _call(api, "GET", "/v1/pools", Authorization=f"Bearer {TOKEN}", **LAN_PEER)
    assert ok == 200
    wrong, body = await _call(api, "GET", "/v1/pools", Authorization="Bearer nope")
    assert wrong == 401 and body["code"] == "BAD_TOKEN"


async def test_loopback_needs_the_token_without_auth_optional(make_api: MakeApi) -> None:
    api = await make_api(settings=ApiSettings(auth_token=TOKEN), peer=True)
    assert (await _call(api, "GET", "/v1/pools"))[0] == 401
    assert (await _call(api, "GET", "/v1/pools", **{REMOTE_HEADER: "127.0.0.5"}))[0] == 401
    assert (await _call(api, "GET", "/v1/pools", **{REMOTE_HEADER: "::1"}))[0] == 401


async def test_no_token_on_loopback_is_open(make_api: MakeApi) -> None:
    api = await make_api()
    for method, path in served_routes(api.app):
        assert (await _call(api, method, path))[0] != 401, (method, path)


async def test_identity_reaches_the_task(make_api: MakeApi) -> None:
    api = await make_api(settings=ApiSettings(auth_token=TOKEN, auth_optional=True))
    resp = await api.client.post(
        "/v1/tasks",
        json={"prompt": "x", "max_tokens": 1},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    task_id = (await resp.json())["task_id"]
    expected = "token:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:6]
    assert api.orch.task(task_id).identity == expected
    local = await api.submit(max_tokens=1)
    assert api.orch.task(local).identity == "localhost"


async def test_proxy_identity_only_when_trusted(make_api: MakeApi) -> None:
    api = await make_api(settings=ApiSettings(auth_token=TOKEN, trust_proxy_auth=True))
    resp = await api.client.post(
        "/v1/tasks", json={"prompt": "x", "max_tokens": 1}, headers={"X-Forwarded-User": "ann b"}
    )
    assert resp.status == 202
    assert api.orch.task((await resp.json())["task_id"]).identity == "proxy:ann_b"
    strict = await make_api(settings=ApiSettings(auth_token=TOKEN))
    status, _ = await _call(strict, "GET", "/v1/pools", **{"X-Forwarded-User": "ann"})
    assert status == 401


async def test_proxy_header_counts_only_from_listed_proxies(make_api: MakeApi) -> None:
    """On a LAN bind, a peer that is not a listed proxy cannot skip the token by the header."""
    settings = ApiSettings(
        bind_host="0.0.0.0",
        auth_token=TOKEN,
        trust_proxy_auth=True,
        trusted_proxies=("192.168.1.2", "10.9.0.0/16"),
    )
    api = await make_api(settings=settings, peer=True)
    user = {"X-Forwarded-User": "ann"}
    status, body = await _call(api, "GET", "/v1/pools", **LAN_PEER, **user)
    assert status == 401 and body["code"] == "MISSING_TOKEN"
    for proxy in ("192.168.1.2", "10.9.3.4"):
        assert (await _call(api, "GET", "/v1/pools", **{REMOTE_HEADER: proxy}, **user))[0] == 200
    with pytest.raises(UnsafeBind, match="trusted_proxies"):
        check_bind(ApiSettings(bind_host="0.0.0.0", auth_token=TOKEN, trust_proxy_auth=True))
    check_bind(settings)


async def test_tokenless_callers_may_use_the_allowed_host_names(make_api: MakeApi) -> None:
    settings = ApiSettings(
        bind_host="0.0.0.0", auth_token=TOKEN, auth_optional=True, allowed_hosts=("orch.lan",)
    )
    api = await make_api(settings=settings)
    assert (await _call(api, "GET", "/v1/pools", Host="orch.lan:8080"))[0] == 200
    status, body = await _call(api, "GET", "/v1/pools", Host="evil.example:8080")
    assert status == 401 and body["code"] == "MISSING_TOKEN"
    loopback = await make_api(settings=ApiSettings(allowed_hosts=("orch.lan",)))
    assert (await _call(loopback, "GET", "/v1/pools", Host="orch.lan"))[0] == 200
    assert (await _call(loopback, "GET", "/v1/pools", Host="evil.example"))[0] == 403


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "lan-box.example"])
def test_refuses_non_loopback_bind_without_token(host: str) -> None:
    with pytest.raises(UnsafeBind) as exc:
        check_bind(ApiSettings(bind_host=host))
    message = str(exc.value)
    assert "BIND_ADDR" in message and "AUTH_TOKEN" in message and "\n" not in message
    check_bind(ApiSettings(bind_host=host, auth_token=TOKEN))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "localhost"])
def test_loopback_bind_without_token_is_allowed(host: str) -> None:
    check_bind(ApiSettings(bind_host=host))


async def test_token_never_appears_in_logs(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = await make_api(
        MockSpec("m0", tokens_per_s=0), settings=ApiSettings(auth_token=TOKEN), peer=True
    )
    good = {"Authorization": f"Bearer {TOKEN}"}
    task = await api.client.post("/v1/tasks", json={"prompt": "x", "max_tokens": 2}, headers=good)
    task_id = (await task.json())["task_id"]
    await (await api.client.get(f"/v1/tasks/{task_id}/stream", headers=good)).read()
    await api.client.get("/v1/pools", headers={"Authorization": f"Bearer {TOKEN}x"})
    await api.client.get("/v1/pools", headers={"Authorization": TOKEN, **LAN_PEER})
    await api.client.get("/nope", headers=good)
    assert caplog.records
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in repr(record.__dict__)
    assert TOKEN not in caplog.text
    assert any("token:" in repr(getattr(r, "fields", "")) for r in caplog.records)
