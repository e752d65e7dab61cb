"""Private files: atomic 0600 writes and the bearer-token file."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path

from app.config.schema import ConfigError, Problem


def token_problem(token: str) -> str | None:
    """Return why ``token`` is unusable (empty, not one printable line), or None when it is fine."""
    if not token:
        return "the token is empty"
    if not all(c.isprintable() and not c.isspace() for c in token):
        return "the token must be one line of printable characters without spaces"
    return None


def atomic_write(path: Path, data: bytes, *, fsync: Callable[[int], None] = os.fsync) -> None:
    """Replace ``path`` with ``data`` atomically, mode 0600 from creation.

    Writes a temporary file in the same folder, fsyncs it, renames it over
    ``path`` and fsyncs the folder; a missing folder is created with mode 0700.
    On failure the old file is intact and no temporary file is left. Raises
    OSError. BLOCKING.
    """
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fsync(folder)
    finally:
        os.close(folder)


STALE_TEMPORARY_AGE_S = 5.0
"""A save's temporary file older than this belongs to a save that was killed."""


def remove_stale_temporaries(
    path: Path, *, now: float | None = None, min_age_s: float = STALE_TEMPORARY_AGE_S
) -> list[Path]:
    """Delete the temporaries ``atomic_write`` left beside ``path`` when a save was
    killed (``.NAME.<12 hex>.tmp`` not modified for ``min_age_s``).

    Returns the deleted paths, sorted. Files it cannot read or delete are left
    alone; never raises OSError. BLOCKING (lists the folder).
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{12}}\.tmp")
    cutoff = (time.time() if now is None else now) - min_age_s
    removed: list[Path] = []
    try:
        candidates = sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))
    except OSError:
        return removed
    for tmp in candidates:
        try:
            if tmp.is_file() and tmp.stat().st_mtime <= cutoff:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def generate_token() -> str:
    """Return a new random bearer token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` atomically with mode 0600 (folder 0700 if created).

    Raises ConfigError when the token is empty or not one line, OSError on I/O
    failure. BLOCKING.
    """
    reason = token_problem(token.strip())
    if reason:
        raise ConfigError([Problem(str(path), f"{reason}; not written")])
    atomic_write(path, (token.strip() + "\n").encode("utf-8"))


def read_token_file(path: Path) -> str:
    """Return the token in ``path``, whitespace stripped.

    Raises ConfigError naming the path when it is unreadable, readable by group
    or others (with the ``chmod 600`` fix, as ssh does), empty or not one line.
    Blocks (reads the file).
    """
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            message = (
                f"token file {path} can be read by other users (mode {stat.S_IMODE(mode):o}); "
                f"make it private with: chmod 600 {path}"
            )
            raise ConfigError([Problem(str(path), message)])
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        message = f"cannot read the token file {path} ({reason}); write the token there (mode 0600)"
        raise ConfigError([Problem(str(path), message)]) from exc
    problem = token_problem(token)
    if problem:
        message = f"token file {path}: {problem}; write one token there (mode 0600)"
        raise ConfigError([Problem(str(path), message)])
    return token


def token_fingerprint(token: str) -> str:
    """Return the first 6 hex digits of the token's SHA-256, safe to show and log."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:6]
