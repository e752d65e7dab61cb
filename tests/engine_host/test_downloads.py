"""Downloads through the real huggingface_hub and aiohttp clients against a local fake hub."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from app.engine_host.downloads import (
    HF_CHUNK_BYTES,
    DownloadCanceled,
    Downloader,
    DownloadFailed,
    Progress,
    remove_partials,
)
from app.orchestrator.model_refs import ModelRef, parse_ref
from tests.api.conftest import wait_until
from tests.support.fake_hub import FakeHub

REPO = "llama-orch/demo-GGUF"
FILE = "demo.Q8_0.gguf"
REF = parse_ref(f"hf:{REPO}/{FILE}")


@pytest_asyncio.fixture
async def hub(demo_gguf: bytes) -> AsyncIterator[FakeHub]:
    fake = FakeHub({REPO: {FILE: demo_gguf, "README.md": b"# demo\n"}}, chunk_size=16 * 1024)
    await fake.start()
    yield fake
    await fake.stop()


def downloader(hub: FakeHub, free: int = 10**12) -> Downloader:
    return Downloader({"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_secret"}, free_space=lambda _: free)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_hf_download_lands_whole_with_its_digest(
    hub: FakeHub, tmp_path: Path, demo_gguf: bytes
) -> None:
    progress = Progress()

    got = await downloader(hub).fetch(REF, tmp_path, progress)

    assert got.path == tmp_path / FILE
    assert got.path.read_bytes() == demo_gguf
    assert got.sha256 == hashlib.sha256(demo_gguf).hexdigest()
    assert progress.done == progress.total == len(demo_gguf)
    assert leftovers(tmp_path) == [FILE]


async def test_dropped_connection_is_resumed_from_where_it_stopped(
    hub: FakeHub, tmp_path: Path, demo_gguf: bytes
) -> None:
    hub.drop_once_after = 400_000

    got = await downloader(hub).fetch(REF, tmp_path, Progress())

    assert got.path.read_bytes() == demo_gguf
    assert hub.ranges_seen == [f"bytes={HF_CHUNK_BYTES}-"]  # the whole chunks before the drop


async def test_digest_mismatch_is_refused_and_nothing_is_kept(hub: FakeHub, tmp_path: Path) -> None:
    hub.wrong_digest.add(f"{REPO}/{FILE}")

    with pytest.raises(DownloadFailed) as caught:
        await downloader(hub).fetch(REF, tmp_path, Progress())

    assert str(caught.value).startswith(
        f"the download of {FILE} does not match its expected sha256"
    )
    assert leftovers(tmp_path) == []


async def test_low_disk_is_refused_before_any_byte(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(DownloadFailed) as caught:
        await downloader(hub, free=1000).fetch(REF, tmp_path, Progress())

    assert str(caught.value).startswith(f"not enough disk space in {tmp_path} for {FILE}")
    assert "GiB free" in str(caught.value)
    assert leftovers(tmp_path) == []


async def test_cancel_stops_the_download_and_partials_can_be_removed(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.chunk_delay_s = 0.05
    progress = Progress()
    task = asyncio.ensure_future(downloader(hub).fetch(REF, tmp_path, progress))
    await wait_until(lambda: progress.done > 0)
    progress.cancel()

    with pytest.raises(DownloadCanceled):
        await task
    remove_partials(tmp_path, REF)
    assert leftovers(tmp_path) == []


async def test_unknown_repo_and_file_get_plain_sentences(hub: FakeHub, tmp_path: Path) -> None:
    d = downloader(hub)
    with pytest.raises(DownloadFailed, match="the hub has no repository nobody/none"):
        await d.fetch(parse_ref("hf:nobody/none/x.gguf"), tmp_path, Progress())
    with pytest.raises(DownloadFailed, match=f"{REPO} has no file nope.gguf"):
        await d.fetch(parse_ref(f"hf:{REPO}/nope.gguf"), tmp_path, Progress())


async def test_https_download_resumes_and_checks_the_digest(
    hub: FakeHub, tmp_path: Path, demo_gguf: bytes
) -> None:
    hub.drop_once_after = 100_000
    # The fake hub is plain http on loopback; the ref is built as parse_ref would for https.
    plain = ModelRef("https", f"https://hub/{FILE}", url=f"{hub.url}/{REPO}/resolve/main/{FILE}")
    expected = hashlib.sha256(demo_gguf).hexdigest()

    got = await downloader(hub).fetch(plain, tmp_path, Progress(), expected)

    assert got.path.read_bytes() == demo_gguf
    assert any(r.startswith("bytes=") for r in hub.ranges_seen)
    with pytest.raises(DownloadFailed, match="does not match its expected sha256"):
        await downloader(hub).fetch(plain, tmp_path / "again", Progress(), "0" * 64)
    assert leftovers(tmp_path / "again") == []


async def test_the_probe_tells_at_once_when_nothing_answers_at_the_hub(hub: FakeHub) -> None:
    await asyncio.to_thread(Downloader({"HF_ENDPOINT": hub.url}).probe)  # the fake hub answers

    with pytest.raises(OSError):
        Downloader({"HF_ENDPOINT": "http://127.0.0.1:9"}).probe()
    # behind a proxy only the proxy can reach the hub: no direct probe
    Downloader({"HF_ENDPOINT": "http://127.0.0.1:9", "https_proxy": "http://proxy:3128"}).probe()
