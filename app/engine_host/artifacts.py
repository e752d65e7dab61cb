"""The artifact store: one JSON file per artifact in the XDG data folder.

Files are named by their content address and written whole (temp file, fsync,
rename), so a reader never sees half an artifact. A size cap per artifact and
retention (maximum age and total bytes, oldest dropped first) keep the folder
bounded. Retention reads an index of the folder (modification time and size per
file, oldest first) instead of listing it per write: the index is read from the
folder at the first write and again after as many writes as it holds files (at
least ``RESCAN_MIN_WRITES``), so files other processes add or remove are counted
too, at a cost per write that does not grow with the folder. File work runs in a
worker thread; no method blocks the loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from app.orchestrator.artifacts_port import (
    ARTIFACT_ID_PATTERN,
    ArtifactIn,
    ArtifactRef,
    StoredArtifact,
    artifact_id,
    canonical_bytes,
)
from app.orchestrator.errors import NotFound, OrchError

_ID = re.compile(ARTIFACT_ID_PATTERN)
RESCAN_MIN_WRITES = 256
"""The fewest writes between two reads of the whole folder (see the module doc)."""


class _Index:
    """The store's files: ``(mtime, size)`` per path and the paths oldest first.

    Used from the store's worker threads; every method takes the lock. Never blocks
    on more than the folder listing of ``rescan``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[Path, tuple[float, int]] = {}
        self._order: deque[Path] = deque()
        self._total = 0
        self._writes_left = 0

    def due(self) -> bool:
        """Return True when the folder should be read again (counts this write); then
        only this caller reads it: concurrent writes wait for the next count."""
        with self._lock:
            self._writes_left -= 1
            if self._writes_left >= 0:
                return False
            self._writes_left = RESCAN_MIN_WRITES  # until rescan sets the folder's count
            return True

    def rescan(self, root: Path) -> None:
        """Replace the index with the ``*.json`` files now in ``root``."""
        found = []
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.name.endswith(".json") and not entry.name.startswith("."):
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    found.append((st.st_mtime, st.st_size, Path(entry.path)))
        found.sort()
        with self._lock:
            self._files = {path: (mtime, size) for mtime, size, path in found}
            self._order = deque(path for _, _, path in found)
            self._total = sum(size for _, size, _ in found)
            self._writes_left = max(RESCAN_MIN_WRITES, len(found))

    def add(self, path: Path, mtime: float, size: int) -> None:
        """Count a file just written (newest); a path already indexed is left as it is."""
        with self._lock:
            if path in self._files:
                return
            self._files[path] = (mtime, size)
            self._order.append(path)
            self._total += size

    def prune(self, keep: Path, max_total: int, horizon: float) -> list[Path]:
        """Drop from the index, oldest first, files older than ``horizon`` and files
        while the total is over ``max_total``; never ``keep``. Returns the dropped."""
        dropped: list[Path] = []
        kept: Path | None = None
        with self._lock:
            order, files = self._order, self._files
            while order:
                mtime, size = files[order[0]]
                if mtime >= horizon and self._total <= max_total:
                    break
                path = order.popleft()
                if path == keep:
                    kept = path
                    continue
                del files[path]
                self._total -= size
                dropped.append(path)
            if kept is not None:
                order.appendleft(kept)
        return dropped


class ArtifactStore:
    """Artifacts under ``root``: at most ``max_artifact_bytes`` each, ``max_total_bytes``
    in all, none older than ``max_age_s``."""

    def __init__(
        self,
        root: Path,
        *,
        max_artifact_bytes: int = 1 << 20,
        max_total_bytes: int = 256 << 20,
        max_age_s: float = 30 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.max_artifact_bytes = max_artifact_bytes
        self.max_total_bytes = max_total_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._index = _Index()

    async def put(self, artifact: ArtifactIn) -> ArtifactRef:
        """Store ``artifact`` and return its reference; the same artifact gets the same id.

        Raises OrchError 413 INVALID_PARAMS over the size cap. Awaits a worker thread.
        """
        data = canonical_bytes(artifact)
        if len(data) > self.max_artifact_bytes:
            raise OrchError(
                "INVALID_PARAMS",
                f"artifact is {len(data)} bytes, over the {self.max_artifact_bytes} byte cap; "
                "store a smaller one",
                status=413,
                retriable=False,
            )
        ident = artifact_id(data)
        created = await asyncio.to_thread(self._write, ident, data)
        return ArtifactRef(
            id=ident,
            kind=artifact.kind,
            digest=f"sha256:{ident}",
            created_ms=created,
            tags=list(artifact.tags),
            size_bytes=len(data),
        )

    async def get(self, ident: str) -> StoredArtifact:
        """Return the artifact ``ident``. Raises NotFound. Awaits a worker thread."""
        if not _ID.match(ident):
            raise NotFound("artifact", ident[:80])
        found = await asyncio.to_thread(self._read, ident)
        if found is None:
            raise NotFound("artifact", ident)
        data, created = found
        art = ArtifactIn.model_validate(json.loads(data))
        return StoredArtifact(
            id=ident,
            digest=f"sha256:{ident}",
            created_ms=created,
            **art.model_dump(),
        )

    # ---- worker-thread side -------------------------------------------------------

    def _path(self, ident: str) -> Path:
        return self.root / f"{ident}.json"

    def _write(self, ident: str, data: bytes) -> int:
        """Write the file unless it exists; prune; return its creation time (ms)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self._index.due():
            self._index.rescan(self.root)
        path = self._path(ident)
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                now = self._clock()
                os.utime(tmp, (now, now))
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        st = path.stat()
        self._index.add(path, st.st_mtime, st.st_size)
        self._prune(keep=path)
        return int(st.st_mtime * 1000)

    def _read(self, ident: str) -> tuple[bytes, int] | None:
        path = self._path(ident)
        try:
            return path.read_bytes(), int(path.stat().st_mtime * 1000)
        except FileNotFoundError:
            return None

    def _prune(self, keep: Path) -> None:
        """Drop artifacts past the age limit, then the oldest until under the byte cap."""
        horizon = self._clock() - self.max_age_s
        for path in self._index.prune(keep, self.max_total_bytes, horizon):
            path.unlink(missing_ok=True)
