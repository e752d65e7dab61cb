"""Catalog routes on a real ModelStore: SQLite catalog, the fake hub through
huggingface_hub, GGUF checks, metrics, reload with persist."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from openapi_spec_validator import validate

from app.api import ApiSettings, make_app
from app.config.model_edit import set_pool_model
from app.engine_host.catalog import Catalog
from app.engine_host.downloads import Downloader
from app.engine_host.mock import MockSpec
from app.engine_host.model_store import ModelStore
from tests.api.conftest import parse_frames, started_orch, wait_until
from tests.support.fake_hub import FakeHub
from tests.support.gguf_files import BAD_KINDS, write_bad

REPO = "llama-orch/demo-GGUF"
FILE = "demo.Q8_0.gguf"
CONFIG = '# mine\n[[pools]]\nid = "m0"\nengine = "mock"\nmodel = "old"  # keep me\n'


@pytest_asyncio.fixture
async def hub(demo_gguf: bytes) -> AsyncIterator[FakeHub]:
    fake = FakeHub({REPO: {FILE: demo_gguf, "README.md": b"hi"}}, chunk_size=32 * 1024)
    await fake.start()
    yield fake
    await fake.stop()


Make = Callable[..., Awaitable[tuple[Any, ModelStore]]]


@pytest_asyncio.fixture
async def catalog_api(aiohttp_client: Any, hub: FakeHub, tmp_path: Path) -> AsyncIterator[Make]:
    made: list[Any] = []

    async def factory(free: int = 10**12, endpoint: str | None = None) -> tuple[Any, ModelStore]:
        orch, _ = await started_orch((MockSpec("m0", tokens_per_s=0),))
        made.append(orch)
        config = tmp_path / "config.toml"
        config.write_text(CONFIG)

        async def remember(pool_id: str, ref: str) -> None:
            await asyncio.to_thread(set_pool_model, config, pool_id, ref, {})

        env = {"HF_ENDPOINT": endpoint or hub.url}
        store = ModelStore(
            Catalog(tmp_path / "data"), tmp_path / "models",
            Downloader(env, free_space=lambda _: free),
            orch=orch, metrics=orch.metrics, remember=remember,
        )  # fmt: skip
        client = await aiohttp_client(make_app(orch, ApiSettings(), models=store))
        return client, store

    yield factory
    for orch in made:
        await orch.shutdown(deadline_s=0.1)


async def metric(client: Any, line_start: str) -> str:
    text = await (await client.get("/metrics")).text()
    return next((ln for ln in text.splitlines() if ln.startswith(line_start)), "")


async def test_local_file_lifecycle_with_metrics(
    catalog_api: Make, tmp_path: Path, demo_gguf: bytes
) -> None:
    client, _ = await catalog_api()
    model = tmp_path / "mine.gguf"
    model.write_bytes(demo_gguf)

    created = await client.post("/v1/catalog/models", json={"source_url": str(model)})
    assert created.status == 201
    entry = (await created.json())["model"]
    assert (entry["id"], entry["downloaded"], entry["gguf"]["architecture"]) == (
        "mine",
        False,
        "llama",
    )
    assert entry["digest"].startswith("sha256:") and entry["manifests"][0]["size_bytes"] > 0
    assert [m["id"] for m in await (await client.get("/v1/catalog/models")).json()] == ["mine"]
    assert (await (await client.get("/v1/catalog/models/mine")).json())["state"] == "Active"

    verified = await client.post("/v1/catalog/models/mine/verify")
    assert verified.status == 202 and (await verified.json())["status"] == "verified"
    assert await metric(client, 'catalog_verifications_total{engine="llamacpp",reason="ok"')
    model.write_bytes(demo_gguf[:-1] + b"\x01")
    failed = await client.post("/v1/catalog/models/mine/verify")
    assert failed.status == 400
    assert "the file's sha256 changed" in (await failed.json())["message"]
    assert await metric(client, 'catalog_verifications_total{engine="llamacpp",reason="digest')

    state = await client.post("/v1/catalog/models/mine/state", json={"state": "Retired"})
    assert state.status == 202
    assert (await metric(client, 'model_state{model_id="mine",state="Retired"}')).endswith(" 1.0")
    assert (await client.delete("/v1/catalog/models/mine")).status == 204
    assert model.exists(), "a file the catalog did not download is kept"
    assert (await client.get("/v1/catalog/models/mine")).status == 404


@pytest.mark.parametrize("kind", BAD_KINDS)
async def test_bad_files_are_refused_with_the_sentence(
    catalog_api: Make, tmp_path: Path, demo_gguf: bytes, kind: str
) -> None:
    client, _ = await catalog_api()
    bad, sentence = write_bad(kind, tmp_path, demo_gguf)

    resp = await client.post("/v1/catalog/models", json={"source_url": str(bad)})

    assert resp.status == 400
    assert (await resp.json())["message"].startswith(f"{tmp_path}/{sentence}")


async def test_hf_download_streams_progress_and_lands_in_the_catalog(
    catalog_api: Make, tmp_path: Path, demo_gguf: bytes
) -> None:
    client, _ = await catalog_api()

    started = await client.post("/v1/catalog/models", json={"ref": f"hf:{REPO}/{FILE}"})
    assert started.status == 202
    download = (await started.json())["download"]
    events = await client.get(f"/v1/catalog/downloads/{download['id']}/events")
    assert events.headers["Content-Type"] == "text/event-stream"
    frames = parse_frames(await events.read())

    last = json.loads(frames[-1][1])
    assert {name for name, _ in frames} == {"progress"}
    assert (last["state"], last["bytes_done"], last["model_id"]) == (
        "done",
        len(demo_gguf),
        "demo.Q8_0",
    )
    entry = await (await client.get("/v1/catalog/models/demo.Q8_0")).json()
    assert entry["downloaded"] and entry["source_url"] == f"hf:{REPO}/{FILE}"
    assert (tmp_path / "models" / FILE).read_bytes() == demo_gguf
    again = await client.post("/v1/catalog/models", json={"ref": f"hf:{REPO}/{FILE}"})
    assert again.status == 201, "a downloaded ref is not fetched twice"
    assert (await client.delete("/v1/catalog/models/demo.Q8_0")).status == 204
    assert not (tmp_path / "models" / FILE).exists(), "a downloaded file is deleted with its entry"


async def test_cancel_leaves_no_file_and_no_entry(
    catalog_api: Make, hub: FakeHub, tmp_path: Path
) -> None:
    hub.chunk_delay_s = 0.05
    client, store = await catalog_api()
    started = await (
        await client.post("/v1/catalog/models", json={"ref": f"hf:{REPO}/{FILE}"})
    ).json()
    dl = started["download"]["id"]
    await wait_until(lambda: store.download(dl).bytes_done > 0)
    polled = await (await client.get(f"/v1/catalog/downloads/{dl}")).json()
    assert polled["state"] == "running" and polled["bytes_total"] > 0

    assert (await client.post(f"/v1/catalog/downloads/{dl}/cancel")).status == 202
    final = await store.wait_download(dl)

    assert final.state == "canceled"
    assert await (await client.get("/v1/catalog/models")).json() == []
    models = tmp_path / "models"
    assert not models.exists() or list(models.iterdir()) == []


async def test_low_disk_and_digest_mismatch_fail_with_sentences(
    catalog_api: Make, hub: FakeHub
) -> None:
    client, store = await catalog_api(free=1024)
    dl = await (await client.post("/v1/catalog/models", json={"ref": f"hf:{REPO}/{FILE}"})).json()
    low = await store.wait_download(dl["download"]["id"])
    assert low.state == "failed" and low.error is not None
    assert low.error.startswith(f"not enough disk space in {store.folder} for {FILE}")

    client, store = await catalog_api()
    hub.wrong_digest.add(f"{REPO}/{FILE}")
    dl = await (await client.post("/v1/catalog/models", json={"ref": f"hf:{REPO}/{FILE}"})).json()
    bad = await store.wait_download(dl["download"]["id"])
    assert bad.error is not None and "does not match its expected sha256" in bad.error
    assert await store.list_models() == []


async def test_search_lists_gguf_files_and_says_when_the_hub_is_unreachable(
    catalog_api: Make, hub: FakeHub
) -> None:
    client, _ = await catalog_api()

    found = await (await client.get("/v1/catalog/search", params={"q": "demo"})).json()
    (hit,) = found["hits"]
    assert hit["repo"] == REPO
    assert hit["files"] == [
        {"file": FILE, "ref": f"hf:{REPO}/{FILE}", "size_bytes": len(hub.repos[REPO][FILE]),
         "quantization": "Q8_0"}
    ]  # fmt: skip
    await client.get("/v1/catalog/search", params={"q": "demo"})
    assert hub.searches == ["demo"], "results are cached briefly"

    offline, _ = await catalog_api(endpoint="http://127.0.0.1:9")
    answer = await (await offline.get("/v1/catalog/search", params={"q": "x"})).json()
    assert answer["hits"] == [] and answer["error"].startswith("cannot reach the hub")


async def test_reload_resolves_catalog_refs_and_persists(
    catalog_api: Make, tmp_path: Path, demo_gguf: bytes
) -> None:
    client, store = await catalog_api()
    dl = await (await client.post("/v1/catalog/models", json={"ref": f"hf:{REPO}/{FILE}"})).json()
    await store.wait_download(dl["download"]["id"])

    resp = await client.post(
        "/v1/pools/m0/reload", json={"new_model_ref": f"hf:{REPO}/{FILE}", "persist": True}
    )

    assert resp.status == 200 and (await resp.json())["ok"] is True
    text = (tmp_path / "config.toml").read_text()
    assert text == CONFIG.replace('"old"', f'"hf:{REPO}/{FILE}"')
    missing = await client.post("/v1/pools/m0/reload", json={"model_ref": "hf:a/b/c.gguf"})
    assert missing.status == 400
    assert (
        "hf:a/b/c.gguf is not downloaded yet; run `llama-orch pull"
        in (await missing.json())["message"]
    )


async def test_document_with_the_catalog_validates_and_covers_the_router(catalog_api: Make) -> None:
    client, _ = await catalog_api()
    doc = await (await client.get("/openapi.json")).json()
    validate(doc)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    routed = {(r.method, r.resource.canonical) for r in client.app.router.routes()}
    assert documented == routed
    assert "/v1/catalog/search" in doc["paths"]
