"""Composition-root helpers for models: the catalog store, pool model refs, auto-fetch,
and the ``pull`` / ``models`` / ``rm`` commands.

Part of the composition root (used by app.main): it may import config and the
engine host. ``pull`` works without a running server (it writes the same
catalog file a running ``serve`` reads).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from app.config import PoolSettings, Settings
from app.engine_host.catalog import Catalog, default_catalog_dir
from app.orchestrator.catalog_port import CreateModel, Download
from app.orchestrator.errors import OrchError
from app.orchestrator.vram import gib

log = logging.getLogger("llama_orch.models")


def open_catalog(env: Mapping[str, str] = os.environ) -> Catalog:
    """Return the catalog in the XDG data folder (``$XDG_DATA_HOME/llama-orch``)."""
    return Catalog(default_catalog_dir(env))


def pool_model(settings: Settings, pool: PoolSettings, catalog: Catalog) -> tuple[str | None, str]:
    """Return (local model file or None, what the pool says while it has none).

    A download ref (``hf:``, ``https:``) is looked up in the catalog. Blocks briefly.
    """
    if not pool.is_remote_model:
        path = settings.model_path(pool)
        return (str(path) if path else None), ""
    record = catalog.find(pool.model)
    if record is not None:
        return str(record.path), ""
    hint = (
        "it is fetched at start"
        if settings.models.auto_fetch
        else (f"run `llama-orch pull {pool.model}` or get it in the Models view")
    )
    return None, f"needs a model: {pool.model} is not downloaded yet; {hint}"


def build_model_store(settings: Settings, orch: Any, env: Mapping[str, str] = os.environ) -> Any:
    """Return the ModelStore of the app (catalog, downloads, search, config writes)."""
    from app.config.model_edit import add_pool, set_pool_model
    from app.engine_host.downloads import Downloader
    from app.engine_host.model_store import ModelStore

    source = settings.source_path

    async def remember(pool_id: str, ref: str) -> None:
        if source is not None:
            await asyncio.to_thread(set_pool_model, source, pool_id, ref)

    async def new_pool(pool_id: str, ref: str, mask: str) -> None:
        if source is not None:
            await asyncio.to_thread(add_pool, source, pool_id, ref, mask)

    return ModelStore(
        open_catalog(env), settings.models_dir_path(env), Downloader(env),
        orch=orch, metrics=orch.metrics, remember=remember,
        add_pool=new_pool if source is not None else None,
    )  # fmt: skip


async def auto_fetch(settings: Settings, store: Any, orch: Any) -> None:
    """Download each missing pool model (``[models] auto_fetch``) and load it. Never raises."""
    for pool in settings.pools:
        if pool.engine != "llamacpp" or not pool.is_remote_model:
            continue
        try:
            started = await store.create(CreateModel(source_url=pool.model))
            if started.download is not None:
                done = await store.wait_download(started.download.id)
                if done.state != "done":
                    log.warning("auto-fetch of %s: %s", pool.model, done.error or done.state)
                    continue
                await orch.reload(pool.id, await store.resolve(pool.model))
        except OrchError as exc:
            log.warning("auto-fetch of %s: %s", pool.model, exc.message)


# ---- commands ---------------------------------------------------------------------


def cmd_pull(ref: str, settings: Settings, out: TextIO = sys.stderr) -> int:
    """Download ``ref`` into the catalog with a progress line; returns 0, 1 or 2."""
    return asyncio.run(_pull(ref, settings, out))


async def _pull(ref: str, settings: Settings, out: TextIO) -> int:
    from app.engine_host.downloads import Downloader
    from app.engine_host.model_store import ModelStore

    store = ModelStore(open_catalog(), settings.models_dir_path(), Downloader(os.environ))
    try:
        started = await store.create(CreateModel(source_url=ref))
    except OrchError as exc:
        print(exc.message, file=out)
        return 2
    if started.model is not None:
        print(f"{started.model.id}: already in the catalog ({started.model.path})", file=out)
        return 0
    assert started.download is not None
    try:
        final = await _watch(store, started.download.id, out)
    except (KeyboardInterrupt, asyncio.CancelledError):
        store.cancel_download(started.download.id)
        await store.wait_download(started.download.id)
        print("\ncanceled; nothing was kept", file=out)
        return 130
    if final.state != "done":
        print(f"\n{final.error or final.state}", file=out)
        return 1
    record = await store.get_model(final.model_id or "")
    print(f"\n{record.id}: {record.path} ({gib(record.size_bytes)} GiB)", file=out)
    return 0


async def _watch(store: Any, download_id: str, out: TextIO) -> Download:
    waiter = asyncio.ensure_future(store.wait_download(download_id))
    while not waiter.done():
        _progress_line(store.download(download_id), out)
        await asyncio.wait([waiter], timeout=0.5)
    final: Download = waiter.result()
    _progress_line(final, out)
    return final


def _progress_line(d: Download, out: TextIO) -> None:
    total = d.bytes_total or 0
    frac = d.bytes_done / total if total else 0.0
    bar = "#" * int(frac * 30)
    rate = f"{d.rate_bytes_per_s / 2**20:.1f} MiB/s" if d.rate_bytes_per_s else "-- MiB/s"
    eta = f"ETA {d.eta_s:.0f} s" if d.eta_s is not None else "ETA --"
    line = (
        f"[{bar:<30}] {frac:6.1%} {d.bytes_done / 2**20:.1f}/{total / 2**20:.1f} MiB {rate} {eta}"
    )
    end = "\r" if out.isatty() else "\n"
    if out.isatty() or d.state != "running":
        print(line, end=end, file=out, flush=True)


def cmd_models(as_json: bool, out: TextIO = sys.stdout) -> int:
    """Print the catalog (a table, or JSON). Returns 0."""
    catalog = open_catalog()
    records = catalog.list()
    if as_json:
        from app.engine_host.downloads import Downloader
        from app.engine_host.model_store import ModelStore

        store = ModelStore(catalog, catalog.folder, Downloader({}))
        views = [store.view(r).model_dump(mode="json") for r in records]
        print(json.dumps(views, indent=2), file=out)
        return 0
    if not records:
        print("no models yet; get one with `llama-orch pull hf:OWNER/REPO/FILE.gguf`", file=out)
    for r in records:
        quant = r.metadata.get("quantization", "?")
        ctx = r.metadata.get("context_length") or "?"
        line = f"{r.id:<32} {quant:<8} {gib(r.size_bytes):>6} GiB  ctx {ctx:<7} {r.state.value:<8}"
        print(f"{line} {r.ref}", file=out)
    return 0


def cmd_rm(model_id: str, out: TextIO = sys.stderr) -> int:
    """Remove a model from the catalog (and its file when it was downloaded). 0 or 1."""
    catalog = open_catalog()
    record = catalog.remove(model_id)
    if record is None:
        print(f"no model {model_id!r} in the catalog; see `llama-orch models`", file=out)
        return 1
    if record.downloaded:
        record.path.unlink(missing_ok=True)
    print(f"removed {model_id}" + (f" and {record.path}" if record.downloaded else ""), file=out)
    return 0


def run_model_command(command: str, args: Any, config: Path) -> int:
    """Run ``pull``, ``models`` or ``rm`` from the parsed command line; returns the exit code."""
    from app.config import ConfigError, load_settings

    if command == "models":
        return cmd_models(args.json)
    if command == "rm":
        return cmd_rm(args.model_id)
    try:
        settings = load_settings(config) if config.exists() else load_settings(None)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return cmd_pull(args.ref, settings)


def add_model_commands(sub: Any) -> None:
    """Add ``pull``, ``models`` and ``rm`` to the CLI's subparsers."""
    pull = sub.add_parser("pull", help="download a model into the catalog")
    pull.add_argument(
        "ref", metavar="REF", help="hf:OWNER/REPO/FILE.gguf[@REV], https://... or a path"
    )
    pull.add_argument("--config", type=Path, default=None, help="config file (TOML)")
    models = sub.add_parser("models", help="list the models in the catalog")
    models.add_argument("--json", action="store_true")
    rm = sub.add_parser("rm", help="remove a model from the catalog")
    rm.add_argument("model_id", metavar="ID")
