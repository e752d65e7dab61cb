"""The SQLite model catalog: add, find, state, touch, remove; survives a reopen."""

from __future__ import annotations

from pathlib import Path

from app.engine_host.catalog import Catalog, ModelState, default_catalog_dir, model_id_from
from app.engine_host.gguf_info import read_gguf


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_records_persist_with_their_metadata(tmp_path: Path, demo_gguf: bytes) -> None:
    model = tmp_path / "models" / "tiny Q4.gguf"
    model.parent.mkdir()
    model.write_bytes(demo_gguf)
    clock = Ticks()
    catalog = Catalog(tmp_path / "data", clock=clock)

    rec = catalog.add("hf:me/tiny/tiny Q4.gguf", read_gguf(model), "ab" * 32, downloaded=True)

    again = Catalog(tmp_path / "data").get(rec.id)
    assert again == rec
    assert (rec.id, rec.state, rec.downloaded, rec.size_bytes) == (
        "tiny-Q4",
        ModelState.ACTIVE,
        True,
        len(demo_gguf),
    )
    assert rec.metadata["architecture"] == "llama"
    assert rec.metadata["block_count"] == 2
    assert rec.added_at == 1001.0 and rec.last_used_at is None
    assert catalog.find("hf:me/tiny/tiny Q4.gguf") == rec
    assert catalog.find(f"file:{model}") == rec
    assert catalog.find("tiny-Q4") == rec


def test_same_name_gets_a_unique_id_and_state_changes(tmp_path: Path, demo_gguf: bytes) -> None:
    catalog = Catalog(tmp_path, clock=Ticks())
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.gguf").write_bytes(demo_gguf)
    first = catalog.add("file:a", read_gguf(tmp_path / "a" / "m.gguf"), "", downloaded=False)
    second = catalog.add("file:b", read_gguf(tmp_path / "b" / "m.gguf"), "", downloaded=False)

    assert (first.id, second.id) == ("m", "m-2")
    retired = catalog.set_state("m", ModelState.RETIRED)
    assert retired is not None and retired.state is ModelState.RETIRED
    catalog.touch("m-2")
    touched = catalog.get("m-2")
    assert touched is not None and touched.last_used_at is not None
    assert catalog.remove("m") == retired
    assert [r.id for r in catalog.list()] == ["m-2"]
    assert catalog.remove("m") is None


def test_default_folder_follows_xdg() -> None:
    assert default_catalog_dir({"XDG_DATA_HOME": "/x/data"}) == Path("/x/data/llama-orch")
    assert default_catalog_dir({"HOME": "/home/u"}) == Path("/home/u/.local/share/llama-orch")
    assert model_id_from("Llama 3 (8B).Q4_K_M.gguf") == "Llama-3-8B-.Q4_K_M"
