"""A pool whose download ref is not in the catalog says it needs a model, naming the ref."""

from __future__ import annotations

from pathlib import Path

from app.config import load_settings
from app.engine_host.catalog import Catalog
from app.engine_host.gguf_info import read_gguf
from app.models_wiring import pool_model

REF = "hf:me/tiny/tiny.gguf"


def test_missing_ref_needs_a_model_and_a_pulled_one_resolves(
    tmp_path: Path, demo_gguf: bytes
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[pools]]\nid = "a"\nmodel = "{REF}"\n')
    settings = load_settings(cfg, {})
    catalog = Catalog(tmp_path / "data")

    path, needs = pool_model(settings, settings.pools[0], catalog)
    assert path is None
    assert needs == (
        f"needs a model: {REF} is not downloaded yet; run `llama-orch pull {REF}` "
        "or get it in the Models view"
    )

    model = tmp_path / "tiny.gguf"
    model.write_bytes(demo_gguf)
    catalog.add(REF, read_gguf(model), "00", downloaded=True)
    assert pool_model(settings, settings.pools[0], catalog) == (str(model.resolve()), "")
