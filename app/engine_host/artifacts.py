"""The artifact store: one JSON file per artifact in the XDG data folder.

Files are named by their content address and written whole (temp file, fsync,
rename), so a reader never sees half an artifact. A size cap per artifact and
retention (maximum age and total bytes, oldest dropped first) keep the folder
bounded. File work runs in a worker thread; no method blocks the loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import time
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
        created = int(path.stat().st_mtime * 1000)
        self._prune(keep=path)
        return created

    def _read(self, ident: str) -> tuple[bytes, int] | None:
        path = self._path(ident)
        try:
            return path.read_bytes(), int(path.stat().st_mtime * 1000)
        except FileNotFoundError:
            return None

    def _prune(self, keep: Path) -> None:
        """Drop artifacts past the age limit, then the oldest until under the byte cap."""
        files = []
        for path in self.root.glob("*.json"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, path))
        files.sort()
        total = sum(size for _, size, _ in files)
        horizon = self._clock() - self.max_age_s
        for mtime, size, path in files:
            if path == keep:
                continue
            if mtime >= horizon and total <= self.max_total_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
