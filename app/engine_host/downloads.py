"""Model downloads: ``hf:`` through ``huggingface_hub``, ``https:`` through aiohttp.

Every download: asks the size first and checks free disk space (through an
injected probe), writes into a temporary place inside the target folder,
resumes after a dropped connection, checks the sha256 when a digest is known
(given, or the hub's LFS digest), and only then renames the file into place.
A canceled or failed download leaves no partial file. Progress (bytes, rate,
ETA) is kept on a ``Progress`` the caller polls. ``HF_ENDPOINT`` and
``HF_TOKEN`` are read from the environment given; the token is never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from tqdm.std import tqdm

from app.orchestrator.model_refs import ModelRef
from app.orchestrator.vram import gib

log = logging.getLogger(__name__)

FreeSpace = Callable[[Path], int]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_RETRIES = 5
HF_CHUNK_BYTES = 256 * 1024
HUB_PROBE_TIMEOUT_S = 3.0
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
"""huggingface_hub's read size (10 MB by default): smaller gives progress, cancel and
resume a finer grain (a dropped connection resumes from the last whole chunk)."""
DEFAULT_HF_ENDPOINT = "https://huggingface.co"


def disk_free(folder: Path) -> int:
    """Return the free bytes of the disk holding ``folder``. Blocks briefly."""
    return shutil.disk_usage(folder).free


class DownloadFailed(Exception):
    """A download failed; ``str()`` is one plain sentence naming the fix."""


class DownloadCanceled(Exception):
    """The download was canceled by the user."""


@dataclass
class Progress:
    """Bytes, rate and ETA of one download. Written by the download, read by anyone."""

    clock: Callable[[], float] = time.monotonic
    done: int = 0
    total: int | None = None
    rate: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    _mark: tuple[float, int] | None = None

    def begin(self, total: int | None, done: int) -> None:
        """Start (or resume) counting at ``done`` of ``total`` bytes."""
        self.total, self.done = total, done
        self._mark = (self.clock(), done)

    def add(self, n: int) -> None:
        """Count ``n`` more bytes; raises DownloadCanceled once cancel was asked."""
        self.done += n
        now = self.clock()
        if self._mark is None:
            self._mark = (now, self.done - n)
        since, at = self._mark
        if now - since >= 0.5:
            fresh = (self.done - at) / (now - since)
            self.rate = fresh if self.rate is None else 0.5 * self.rate + 0.5 * fresh
            self._mark = (now, self.done)
        if self.cancel_event.is_set():
            raise DownloadCanceled

    @property
    def eta_s(self) -> float | None:
        """Return the seconds left at the current rate, None when unknown."""
        if self.total is None or not self.rate:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    def cancel(self) -> None:
        """Ask the download to stop at its next chunk."""
        self.cancel_event.set()


@dataclass(frozen=True)
class Fetched:
    """A finished download: the file in place and its sha256."""

    path: Path
    sha256: str


def check_space(folder: Path, name: str, needed: int, free_space: FreeSpace) -> None:
    """Raise DownloadFailed when ``folder`` has less than ``needed`` bytes free."""
    free = free_space(folder)
    if free < needed:
        raise DownloadFailed(
            f"not enough disk space in {folder} for {name}: it needs {gib(needed)} GiB, "
            f"{gib(free)} GiB free; free some space or set [models] dir to another disk"
        )


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of the file at ``path``. BLOCKING (reads the whole file)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def normal_digest(text: str | None) -> str | None:
    """Return the hex of ``"sha256:<hex>"`` or ``"<hex>"``; raises ValueError otherwise."""
    if not text:
        return None
    value = text.strip().lower().removeprefix("sha256:")
    if not _SHA256.match(value):
        raise ValueError(f"digest {text!r} is not a sha256; use sha256:<64 hex digits>")
    return value


def _verified(tmp: Path, final: Path, expected: str | None, name: str) -> Fetched:
    actual = sha256_of(tmp)
    if expected is not None and actual != expected:
        tmp.unlink(missing_ok=True)
        raise DownloadFailed(
            f"the download of {name} does not match its expected sha256 (expected "
            f"{expected[:12]}…, got {actual[:12]}…); it was deleted, try again or check the digest"
        )
    os.replace(tmp, final)
    return Fetched(final, actual)


class Downloader:
    """Fetches remote model refs into a folder. One instance per app."""

    def __init__(
        self,
        env: Mapping[str, str] = os.environ,
        *,
        free_space: FreeSpace = disk_free,
        session: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        self.endpoint = env.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_HF_ENDPOINT
        self._token = env.get("HF_TOKEN") or None
        self._proxied = any(env.get(v) or env.get(v.lower()) for v in _PROXY_VARS)
        self._free_space = free_space
        self._session = session

    def probe(self) -> None:
        """Connect once to the hub's host and port, and close. Blocks up to 3 s.

        Raises OSError when nothing answers there (refused, unknown host, timeout), so
        a search fails at once instead of after the hub client's five retries (about
        23 s). Skipped behind a proxy, where only the proxy can tell.
        """
        if self._proxied:
            return
        url = urlsplit(self.endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
        with socket.create_connection((url.hostname or "", port), HUB_PROBE_TIMEOUT_S):
            pass

    def hf_api(self) -> Any:
        """Return a ``huggingface_hub.HfApi`` on the configured endpoint and token."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self._token)

    async def fetch(
        self, ref: ModelRef, folder: Path, progress: Progress, expected: str | None = None
    ) -> Fetched:
        """Download ``ref`` into ``folder`` and return the file with its sha256.

        Raises DownloadFailed (one sentence), DownloadCanceled, or
        asyncio.CancelledError; nothing partial is left after any of them.
        """
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        if ref.kind == "hf":
            return await asyncio.to_thread(self._fetch_hf, ref, folder, progress, expected)
        return await self._fetch_https(ref, folder, progress, expected)

    # ---- hf: through huggingface_hub (blocking; runs in a worker thread) ----

    def _fetch_hf(
        self, ref: ModelRef, folder: Path, progress: Progress, expected: str | None
    ) -> Fetched:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url

        constants.DOWNLOAD_CHUNK_SIZE = HF_CHUNK_BYTES
        name = ref.file_name
        staging = folder / f".partial-{_safe(ref.repo)}-{_safe(ref.file)}"
        try:
            url = hf_hub_url(ref.repo, ref.file, revision=ref.revision, endpoint=self.endpoint)
            meta = get_hf_file_metadata(url, token=self._token, endpoint=self.endpoint)
            expected = expected or _lfs_sha256(meta.etag)
            check_space(folder, name, (meta.size or 0) - _partial_bytes(staging), self._free_space)
            got = hf_hub_download(
                ref.repo, ref.file, revision=ref.revision, local_dir=staging,
                endpoint=self.endpoint, token=self._token, tqdm_class=_bar_class(progress),
            )  # fmt: skip
        except DownloadCanceled:
            raise
        except DownloadFailed:
            raise
        except Exception as exc:
            raise DownloadFailed(_hub_sentence(ref, exc)) from None
        try:
            return _verified(Path(got), folder / name, expected, name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # ---- https: through aiohttp ----

    async def _fetch_https(
        self, ref: ModelRef, folder: Path, progress: Progress, expected: str | None
    ) -> Fetched:
        name = ref.file_name
        tmp = folder / f".{name}.part"
        session = self._session() if self._session else aiohttp.ClientSession()
        try:
            for attempt in range(_RETRIES):
                try:
                    await self._https_pass(session, ref, tmp, progress)
                    break
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                    if attempt == _RETRIES - 1:
                        raise DownloadFailed(
                            f"the download of {name} kept failing: {exc}"
                        ) from None
                    log.info("download of %s interrupted; resuming", name)
            return await asyncio.to_thread(_verified, tmp, folder / name, expected, name)
        except aiohttp.ClientError as exc:
            raise DownloadFailed(f"cannot download {ref.url}: {exc}; check the address") from None
        finally:
            if self._session is None:
                await session.close()

    async def _https_pass(
        self, session: aiohttp.ClientSession, ref: ModelRef, tmp: Path, progress: Progress
    ) -> None:
        have = await asyncio.to_thread(_size_or_zero, tmp)
        headers = {"Range": f"bytes={have}-"} if have else {}
        async with session.get(ref.url, headers=headers) as resp:
            if resp.status not in (200, 206):
                raise DownloadFailed(f"{ref.url} answered {resp.status}; check the address")
            if resp.status == 200:
                have = 0
            total = have + resp.content_length if resp.content_length is not None else None
            if have == 0:
                check_space(tmp.parent, ref.file_name, total or 0, self._free_space)
            progress.begin(total, have)
            with tmp.open("ab" if have else "wb") as out:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    out.write(chunk)
                    progress.add(len(chunk))


def remove_partials(folder: Path, ref: ModelRef) -> None:
    """Delete whatever a download of ``ref`` left in ``folder``. Blocks."""
    if ref.kind == "hf":
        shutil.rmtree(folder / f".partial-{_safe(ref.repo)}-{_safe(ref.file)}", ignore_errors=True)
    else:
        (folder / f".{ref.file_name}.part").unlink(missing_ok=True)


def _size_or_zero(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _partial_bytes(staging: Path) -> int:
    if not staging.exists():
        return 0
    return sum(p.stat().st_size for p in staging.rglob("*.incomplete"))


def _lfs_sha256(etag: str | None) -> str | None:
    value = (etag or "").strip('"').lower()
    return value if _SHA256.match(value) else None


def _hub_sentence(ref: ModelRef, exc: Exception) -> str:
    kind = type(exc).__name__
    if kind in ("RepositoryNotFoundError", "GatedRepoError"):
        return f"the hub has no repository {ref.repo} you can read; check the name or set HF_TOKEN"
    if kind in ("EntryNotFoundError", "RemoteEntryNotFoundError", "RevisionNotFoundError"):
        return f"{ref.repo} has no file {ref.file}; pick one of its .gguf files"
    if "Connect" in kind or "Timeout" in kind or isinstance(exc, OSError):
        return "cannot reach the hub; check the network (or HF_ENDPOINT) and try again"
    return f"the download of {ref.file_name} failed ({kind}); try again"


def _bar_class(progress: Progress) -> type[Any]:
    """Return a silent tqdm class that feeds ``progress`` and raises on cancel."""

    class _Bar(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            progress.begin(kwargs.get("total"), int(kwargs.get("initial") or 0))

        def update(self, n: float | None = 1) -> bool | None:
            progress.add(int(n or 0))
            return None

    return _Bar
