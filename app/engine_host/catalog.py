"""The model catalog: one SQLite file in the XDG data folder.

Per model: its ref, local path, size, sha256, state (Active / Retired), when it
was added and last used, whether the catalog downloaded it, and the GGUF
metadata. Every call opens its own connection, so the catalog can be used from
worker threads and by a second process (``llama-orch pull`` beside ``serve``).
All methods BLOCK on the disk: call them from a worker thread in async code.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.config.schema import xdg_dir
from app.engine_host.gguf_info import GgufInfo

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    ref TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('Active', 'Retired')),
    added_at REAL NOT NULL,
    last_used_at REAL,
    downloaded INTEGER NOT NULL,
    metadata TEXT NOT NULL
)
"""
_COLUMNS = "id, ref, path, size_bytes, sha256, state, added_at, last_used_at, downloaded, metadata"


class ModelState(StrEnum):
    """A catalog model's lifecycle state (the upstream contract's names)."""

    ACTIVE = "Active"
    RETIRED = "Retired"


@dataclass(frozen=True, slots=True)
class CatalogRecord:
    """One model in the catalog."""

    id: str
    ref: str
    path: Path
    size_bytes: int
    sha256: str
    state: ModelState
    added_at: float
    last_used_at: float | None
    downloaded: bool
    metadata: Mapping[str, Any]


def default_catalog_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Return ``$XDG_DATA_HOME/llama-orch`` (``~/.local/share/llama-orch`` when unset)."""
    return xdg_dir(env, "XDG_DATA_HOME", ".local/share") / "llama-orch"


def model_id_from(name: str) -> str:
    """Return a catalog id made from a file name: its stem with odd characters as "-"."""
    stem = name.removesuffix(".gguf")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.")[:64] or "model"


class Catalog:
    """The catalog file at ``folder/catalog.sqlite3`` (created on first use)."""

    def __init__(self, folder: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self.path = folder / "catalog.sqlite3"
        self._clock = clock

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=10)) as db:
            db.execute(_SCHEMA)
            with db:
                yield db

    def add(
        self, ref: str, info: GgufInfo, sha256: str, *, downloaded: bool, model_id: str = ""
    ) -> CatalogRecord:
        """Add the checked model ``info`` under ``ref`` and return its record.

        An entry for the same file is replaced (keeping its id). ``model_id``
        defaults to one made from the file name, made unique with "-2", "-3"...
        """
        path = info.path.resolve()
        with self._db() as db:
            old = db.execute("SELECT id FROM models WHERE path = ?", (str(path),)).fetchone()
            ident = old[0] if old else self._unique_id(db, model_id or model_id_from(path.name))
            db.execute("DELETE FROM models WHERE path = ?", (str(path),))
            db.execute(
                f"INSERT INTO models ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ident, ref, str(path), info.size_bytes, sha256, ModelState.ACTIVE.value,
                 self._clock(), None, int(downloaded), json.dumps(info.to_json())),
            )  # fmt: skip
        found = self.get(ident)
        assert found is not None
        return found

    @staticmethod
    def _unique_id(db: sqlite3.Connection, base: str) -> str:
        taken = {row[0] for row in db.execute("SELECT id FROM models")}
        ident, n = base, 1
        while ident in taken:
            n += 1
            ident = f"{base}-{n}"
        return ident

    def get(self, model_id: str) -> CatalogRecord | None:
        """Return the record with ``model_id``, None when there is none."""
        return self._one("id = ?", model_id)

    def find(self, ref_or_path: str) -> CatalogRecord | None:
        """Return the Active-or-Retired record whose ref, id or path is ``ref_or_path``."""
        return (
            self._one("ref = ?", ref_or_path)
            or self._one("id = ?", ref_or_path)
            or self._one("path = ?", str(Path(ref_or_path.removeprefix("file:")).resolve()))
        )

    def _one(self, where: str, value: str) -> CatalogRecord | None:
        with self._db() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM models WHERE {where}", (value,)).fetchone()
        return _record(row) if row else None

    def list(self) -> list[CatalogRecord]:
        """Return every record, oldest first."""
        with self._db() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM models ORDER BY added_at, id").fetchall()
        return [_record(r) for r in rows]

    def set_state(self, model_id: str, state: ModelState) -> CatalogRecord | None:
        """Set the state of ``model_id``; return the new record, None when unknown."""
        with self._db() as db:
            db.execute("UPDATE models SET state = ? WHERE id = ?", (state.value, model_id))
        return self.get(model_id)

    def touch(self, model_id: str) -> None:
        """Record that ``model_id`` was just loaded by a pool."""
        with self._db() as db:
            db.execute("UPDATE models SET last_used_at = ? WHERE id = ?", (self._clock(), model_id))

    def remove(self, model_id: str) -> CatalogRecord | None:
        """Remove ``model_id`` from the catalog (not its file); return what was removed."""
        record = self.get(model_id)
        with self._db() as db:
            db.execute("DELETE FROM models WHERE id = ?", (model_id,))
        return record


def _record(row: tuple[Any, ...]) -> CatalogRecord:
    ident, ref, path, size, digest, state, added, used, downloaded, meta = row
    return CatalogRecord(
        id=ident,
        ref=ref,
        path=Path(path),
        size_bytes=int(size),
        sha256=digest,
        state=ModelState(state),
        added_at=float(added),
        last_used_at=None if used is None else float(used),
        downloaded=bool(downloaded),
        metadata=json.loads(meta),
    )
