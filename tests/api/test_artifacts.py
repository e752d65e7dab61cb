"""Artifact routes over a real store: 201 with a content address, read back, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openapi_spec_validator import validate

from app.api import ApiSettings, make_app
from app.engine_host.artifacts import ArtifactStore
from app.engine_host.mock import MockSpec
from tests.api.conftest import started_orch
from tests.api.upstream import load_yaml


async def test_post_and_get_an_artifact(aiohttp_client: Any, tmp_path: Path) -> None:
    orch, _ = await started_orch((MockSpec("m0", tokens_per_s=0),))
    store = ArtifactStore(tmp_path / "artifacts", max_artifact_bytes=2000)
    client = await aiohttp_client(make_app(orch, ApiSettings(), artifacts=store))
    body = {"kind": "plan", "content": {"steps": ["a", "b"]}, "tags": ["demo"]}
    created = await client.post("/v1/artifacts", json=body)
    assert created.status == 201
    ref = await created.json()
    assert created.headers["Location"] == f"/v1/artifacts/{ref['id']}"
    assert ref["digest"] == f"sha256:{ref['id']}" and ref["tags"] == ["demo"]
    again = await (await client.post("/v1/artifacts", json=body)).json()
    assert again["id"] == ref["id"]
    got = await (await client.get(f"/v1/artifacts/{ref['id']}")).json()
    assert got["content"] == {"steps": ["a", "b"]} and got["kind"] == "plan"
    upstream = load_yaml("contracts/openapi/control.yaml")["components"]["schemas"]
    assert set(upstream["ArtifactRef"]["required"]) <= set(ref)
    assert set(upstream["Artifact"]["required"]) <= set(got)
    missing = await client.get("/v1/artifacts/" + "0" * 64)
    assert missing.status == 404 and (await missing.json())["code"] == "NOT_FOUND"
    bad = await client.post("/v1/artifacts", json={"kind": "poem", "content": {}})
    assert bad.status == 400 and "kind" in (await bad.json())["message"]
    big = await client.post("/v1/artifacts", json={"kind": "other", "content": {"x": "y" * 3000}})
    assert big.status == 413 and "byte cap" in (await big.json())["message"]
    doc = await (await client.get("/openapi.json")).json()
    validate(doc)
    assert {"/v1/artifacts", "/v1/artifacts/{artifact_id}"} <= set(doc["paths"])
    await orch.shutdown(deadline_s=0.1)
