"""JSON-lines logging with secret redaction.

Every record becomes one JSON object: ``ts``, ``level``, ``logger``, ``event``,
``human`` (the message), and the structured ``fields`` passed through
``extra={"fields": {...}}`` (job_id, session_id, engine, pool_id, ...).
Registered secrets (the bearer token, engine API keys) are replaced by
``***`` in the rendered line, whatever field they hide in.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class Redactor:
    """A thread-safe set of secrets to scrub from rendered log lines."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        """Register ``secret`` (ignored when empty or shorter than 4 characters)."""
        if not secret or len(secret) < 4:
            return
        with self._lock:
            if secret not in self._secrets:
                self._secrets = (*self._secrets, secret)

    def scrub(self, text: str) -> str:
        """Return ``text`` with every registered secret replaced by ``***``."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


REDACTOR = Redactor()


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line (secrets scrubbed)."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None),
            "human": getattr(record, "human", None) or record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update({k: v for k, v in fields.items() if v is not None})
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in ("fields", "event", "human"):
                data.setdefault(key, value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        line = json.dumps(data, default=str, ensure_ascii=False)
        return self.redactor.scrub(line)


class HumanFormatter(logging.Formatter):
    """A short human line for the terminal (secrets scrubbed)."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = getattr(record, "human", None) or record.getMessage()
        line = f"{stamp} {record.levelname:<7} {record.name}: {text}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.redactor.scrub(line)


class RotatingLogFile(logging.handlers.RotatingFileHandler):
    """A size-rotated log file that formats each record once.

    The standard handler formats every record twice (once to check the size, once
    to write it) and looks the file up on disk per record; this one formats once
    and checks the file only when the size limit is reached. Blocks on the write.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record) + self.terminator
            if self.stream is None:
                self.stream = self._open()
            if self.maxBytes > 0 and self.stream.tell() + len(msg) >= self.maxBytes:
                path = self.baseFilename  # bpo-45401: never roll over a non-regular file
                if not os.path.exists(path) or os.path.isfile(path):
                    self.doRollover()
            self.stream.write(msg)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def setup_logging(
    log_file: Path | None,
    *,
    level: int = logging.INFO,
    stream: TextIO | None = sys.stderr,
    json_stream: bool = False,
) -> None:
    """Configure the ``llama_orch`` loggers: JSON lines to ``log_file`` (rotated at
    10 MB, 3 kept) and human (or JSON) lines to ``stream``. Blocks briefly to open
    the file; call once at start-up."""
    root = logging.getLogger("llama_orch")
    root.setLevel(level)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = RotatingLogFile(log_file, maxBytes=10_000_000, backupCount=3, encoding="utf-8")
        fh.setFormatter(JsonFormatter())
        root.addHandler(fh)
    if stream is not None:
        sh = logging.StreamHandler(stream)
        sh.setFormatter(JsonFormatter() if json_stream else HumanFormatter())
        root.addHandler(sh)
