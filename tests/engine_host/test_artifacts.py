"""The artifact store on a real folder: content addressing, whole files, cap, retention."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.engine_host.artifacts import ArtifactStore
from app.orchestrator.artifacts_port import ArtifactIn
from app.orchestrator.errors import NotFound, OrchError


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _names(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.json")}


def _total_bytes(folder: Path) -> int:
    return sum(os.path.getsize(p) for p in folder.glob("*.json"))


def _entries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir()]


def _art(n: int, kind: str = "trace") -> ArtifactIn:
    return ArtifactIn.model_validate({"kind": kind, "content": {"n": n, "pad": "x" * 100}})


async def test_the_same_artifact_gets_the_same_id_and_reads_back(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    first = await store.put(_art(1))
    again = await store.put(ArtifactIn.model_validate({"content": {"pad": "x" * 100, "n": 1},
                                                       "kind": "trace"}))  # fmt: skip
    assert first.id == again.id and first.digest == f"sha256:{first.id}"
    assert (await store.put(_art(2))).id != first.id
    back = await store.get(first.id)
    assert back.content == {"n": 1, "pad": "x" * 100} and back.created_ms == first.created_ms
    assert not [n for n in _entries(tmp_path / "artifacts") if n.startswith(".tmp")]


async def test_unknown_and_malformed_ids_are_not_found(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    for ident in ("0" * 64, "../etc/passwd", "ABC"):
        with pytest.raises(NotFound):
            await store.get(ident)


async def test_an_artifact_over_the_cap_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, max_artifact_bytes=50)
    with pytest.raises(OrchError) as exc:
        await store.put(_art(1))
    assert exc.value.status == 413 and "50 byte cap" in exc.value.message
    assert not _entries(tmp_path)


async def test_retention_drops_the_oldest_and_the_expired(tmp_path: Path) -> None:
    clock = Clock()
    store = ArtifactStore(tmp_path, max_total_bytes=450, max_age_s=100, clock=clock)
    refs = []
    for n in range(4):
        refs.append(await store.put(_art(n)))
        clock.now += 1
    kept = _names(tmp_path)
    assert refs[0].id not in kept and refs[3].id in kept  # over 450 bytes: oldest went
    assert _total_bytes(tmp_path) <= 450
    clock.now += 1000
    fresh = await store.put(_art(9))
    assert _names(tmp_path) == {fresh.id}  # the rest expired


async def test_retention_counts_the_files_already_in_the_folder(tmp_path: Path) -> None:
    clock = Clock()
    first = ArtifactStore(tmp_path, clock=clock)
    old = []
    for n in range(3):
        old.append(await first.put(_art(n)))
        clock.now += 1
    size = _total_bytes(tmp_path) // 3
    later = ArtifactStore(tmp_path, max_total_bytes=3 * size, clock=clock)  # a restart
    new = await later.put(_art(7))
    assert _names(tmp_path) == {old[1].id, old[2].id, new.id}  # the oldest file went


async def test_storing_the_oldest_artifact_again_keeps_it(tmp_path: Path) -> None:
    clock = Clock()
    store = ArtifactStore(tmp_path, max_total_bytes=450, clock=clock)
    refs = []
    for n in range(3):
        refs.append(await store.put(_art(n)))
        clock.now += 1
    again = await store.put(_art(0))
    assert again.id == refs[0].id and refs[0].id in _names(tmp_path)
    assert _total_bytes(tmp_path) <= 450


def test_one_write_reads_the_folder_however_many_run_at_once() -> None:
    from app.engine_host.artifacts import RESCAN_MIN_WRITES, _Index

    index = _Index()  # writes racing a folder read: only the first caller reads it
    calls = [index.due() for _ in range(2 * RESCAN_MIN_WRITES + 3)]
    assert calls[0] and not any(calls[1 : RESCAN_MIN_WRITES + 1])
    assert calls.count(True) == 3  # the 1st, the 258th and the 515th
