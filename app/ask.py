"""``llama-orch ask``: submit one OrchQueue task from a terminal and stream its answer.

Tokens go to stdout as they arrive (flushed each time); progress (queue
position, predicted start), errors and a one-line summary (pool, TTFT,
tokens/s) go to stderr. Ctrl-C cancels the task on the server before exiting
with 130. Only aiohttp's client is used: no Qt, no engine host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "LLAMA_ORCH_URL"
TOKEN_ENV = "AUTH_TOKEN"
QUEUE_POLL_S = 1.0
CANCEL_TIMEOUT_S = 5.0

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_REJECTED = 4
EXIT_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130  # the exit codes are listed in ``llama-orch ask --help``

_STATUS_EXITS = {400: EXIT_USAGE, 401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_USAGE, 409: EXIT_USAGE,
                 413: EXIT_USAGE, 429: EXIT_REJECTED, 503: EXIT_UNAVAILABLE}  # fmt: skip
_ERROR_EXITS = {"POOL_UNAVAILABLE": EXIT_UNAVAILABLE, "POOL_UNREADY": EXIT_UNAVAILABLE,
                "QUEUE_FULL_DROP_LRU": EXIT_REJECTED}  # fmt: skip


class AskFailure(Exception):
    """Ends the command with ``exit_code`` after printing ``message`` on stderr."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


@dataclass(frozen=True)
class AskOptions:
    """What to ask, and where."""

    prompt: str
    url: str = DEFAULT_URL
    token: str | None = None
    pool: str | None = None
    prefer: tuple[str, ...] = ()
    priority: str = "interactive"
    seed: int | None = None
    max_tokens: int | None = None
    retry: int = 0
    raw: bool = False


def read_options(args: Any, env: dict[str, str], stdin: TextIO) -> AskOptions:
    """Return the options of the parsed ``ask`` command line. Blocks reading stdin ("-").

    Raises AskFailure (exit 2) for an empty prompt, an unreadable token file or a
    URL that is not http(s).
    """
    prompt = stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise AskFailure(EXIT_USAGE, "the prompt is empty; pass PROMPT, or '-' to read stdin")
    url = (args.url or env.get(URL_ENV) or DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise AskFailure(EXIT_USAGE, f"--url must start with http:// or https://, got {url!r}")
    prefer = tuple(p.strip() for p in (args.prefer or "").split(",") if p.strip())
    return AskOptions(
        prompt=prompt,
        url=url,
        token=_token(args.token_file, env),
        pool=args.pool,
        prefer=prefer,
        priority=args.priority,
        seed=args.seed,
        max_tokens=args.max_tokens,
        retry=max(0, args.retry),
        raw=args.raw,
    )


def _token(token_file: str | None, env: dict[str, str]) -> str | None:
    if not token_file:
        return env.get(TOKEN_ENV) or None
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AskFailure(
            EXIT_USAGE, f"cannot read the token file {token_file}: {exc.strerror or exc}"
        ) from None
    if not token:
        raise AskFailure(EXIT_USAGE, f"the token file {token_file} is empty")
    return token


def task_body(opts: AskOptions, task_id: str) -> dict[str, Any]:
    """Return the ``POST /v1/tasks`` body for ``opts``. Pure."""
    body: dict[str, Any] = {"task_id": task_id, "priority": opts.priority}
    if opts.raw:
        body["prompt"] = opts.prompt
    else:
        body["messages"] = [{"role": "user", "content": opts.prompt}]
    if opts.seed is not None:
        body["seed"] = opts.seed
    if opts.max_tokens is not None:
        body["max_tokens"] = opts.max_tokens
    if opts.pool:
        body["placement"] = {"mode": "pin", "pin_pool_id": opts.pool}
    elif opts.prefer:
        body["placement"] = {"mode": "prefer", "prefer_pools": list(opts.prefer)}
    return body


def retry_delay_s(headers: Any) -> float:
    """Return the seconds a 429 asks to wait (X-Backoff-Ms, else Retry-After, else 1)."""
    for name, scale in (("X-Backoff-Ms", 0.001), ("Retry-After", 1.0)):
        with contextlib.suppress(TypeError, ValueError):
            return max(0.05, float(headers.get(name)) * scale)
    return 1.0


def summary(pool: str, ttft_ms: float | None, end: dict[str, Any]) -> str:
    """Return the one-line summary of a finished answer. Pure."""
    tokens = int(end.get("tokens_out") or 0)
    decode_ms = int(end.get("decode_time_ms") or 0)
    rate = f"{tokens / (decode_ms / 1000):.1f} tokens/s" if decode_ms > 0 else "- tokens/s"
    ttft = f"{ttft_ms:.0f} ms" if ttft_ms is not None else "-"
    return f"[pool {pool} · TTFT {ttft} · {tokens} tokens in {decode_ms / 1000:.2f} s · {rate}]"


@dataclass
class _SseEvent:
    kind: str = "message"
    data: list[str] = field(default_factory=list)


async def sse_events(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, Any]]:
    """Yield ``(event, parsed data)`` for each SSE frame of a response body. Awaits reads."""
    event = _SseEvent()
    async for raw in content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if event.data:
                yield event.kind, json.loads("\n".join(event.data))
            event = _SseEvent()
        elif line.startswith("event:"):
            event.kind = line[6:].strip()
        elif line.startswith("data:"):
            event.data.append(line[5:].removeprefix(" "))


class Asker:
    """Runs one ``ask``: submit (with retries), stream, summarize, cancel on Ctrl-C."""

    def __init__(self, opts: AskOptions, session: aiohttp.ClientSession, out: TextIO, err: TextIO):
        self.opts = opts
        self.session = session
        self.out = out
        self.err = err
        self.task_id = str(uuid.uuid4())
        self.interrupted = False
        self._started = time.monotonic()
        self._ttft_ms: float | None = None
        self._ends_with_newline = True
        self._headers = {"X-Correlation-Id": str(uuid.uuid4())}
        if opts.token:
            self._headers["Authorization"] = f"Bearer {opts.token}"

    async def run(self) -> int:
        """Return the exit code. Awaits the whole answer; never raises AskFailure."""
        try:
            admission = await self._submit()
            return await self._stream(admission)
        except AskFailure as exc:
            self._say(f"llama-orch ask: {exc.message}")
            return exc.exit_code
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
            _uncancel()
            await self.cancel_on_server()
            self._say("\ninterrupted: the task was canceled on the server")
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            await self.cancel_on_server()
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())
            return EXIT_ERROR
        except (aiohttp.ClientError, OSError) as exc:
            self._say(f"llama-orch ask: cannot reach {self.opts.url}: {_describe(exc)}; is the "
                      f"server running? (set --url or {URL_ENV})")  # fmt: skip
            return EXIT_ERROR

    async def cancel_on_server(self) -> None:
        """POST the cancel of this task; never raises (the task may not exist)."""
        timeout = aiohttp.ClientTimeout(total=CANCEL_TIMEOUT_S)
        url = f"{self.opts.url}/v1/tasks/{self.task_id}/cancel"
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with self.session.post(url, headers=self._headers, timeout=timeout) as resp:
                await resp.read()

    async def _submit(self) -> dict[str, Any]:
        body = task_body(self.opts, self.task_id)
        attempt = 0
        while True:
            async with self.session.post(
                f"{self.opts.url}/v1/tasks", json=body, headers=self._headers
            ) as resp:
                if resp.status == 202:
                    admission: dict[str, Any] = await resp.json()
                    return admission
                failure = await _failure(resp)
                delay = retry_delay_s(resp.headers)
            attempt += 1
            if resp.status != 429 or attempt > self.opts.retry:
                raise failure
            self._say(f"queue full; retrying in {delay:.1f} s ({attempt}/{self.opts.retry})")
            await asyncio.sleep(delay)

    async def _stream(self, admission: dict[str, Any]) -> int:
        pool = str(admission.get("pool_id"))
        self._say(
            f"task {self.task_id} admitted to pool {pool}: queue position "
            f"{admission.get('queue_position')}, predicted start in "
            f"{admission.get('predicted_start_ms')} ms"
        )
        url = f"{self.opts.url}/v1/tasks/{self.task_id}/stream"
        watcher = asyncio.create_task(self._watch_queue(admission.get("queue_position")))
        try:
            async with self.session.get(url, headers=self._headers) as resp:
                if resp.status != 200:
                    raise await _failure(resp)
                async for kind, data in sse_events(resp.content):
                    if kind != "token":
                        watcher.cancel()
                    if kind in ("end", "error"):
                        return self._finish(kind, data, pool)
                    if kind == "token":
                        self._token(data["t"])
        finally:
            watcher.cancel()
        raise AskFailure(EXIT_ERROR, "the stream ended before the task finished")

    async def _watch_queue(self, last: object) -> None:
        """Print the queue position when it changes, until the task starts."""
        url = f"{self.opts.url}/v1/tasks/{self.task_id}"
        while True:
            await asyncio.sleep(QUEUE_POLL_S)
            with contextlib.suppress(aiohttp.ClientError, OSError, ValueError):
                async with self.session.get(url, headers=self._headers) as resp:
                    view = await resp.json() if resp.status == 200 else {}
                position = view.get("queue_position")
                if view.get("state") != "queued":
                    return
                if position != last:
                    self._say(f"waiting: queue position {position}")
                    last = position

    def _token(self, text: str) -> None:
        if self._ttft_ms is None:
            self._ttft_ms = (time.monotonic() - self._started) * 1000
        self.out.write(text)
        self.out.flush()
        if text:
            self._ends_with_newline = text.endswith("\n")

    def _finish(self, kind: str, data: dict[str, Any], pool: str) -> int:
        if not self._ends_with_newline:
            self.out.write("\n")
            self.out.flush()
        if kind == "error":
            code = str(data.get("code"))
            raise AskFailure(_ERROR_EXITS.get(code, EXIT_ERROR), f"{code}: {data.get('message')}")
        if data.get("finish_reason") == "canceled":
            raise AskFailure(EXIT_ERROR, "the task was canceled on the server")
        self._say(summary(pool, self._ttft_ms, data))
        return EXIT_OK

    def _say(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()


async def _failure(resp: aiohttp.ClientResponse) -> AskFailure:
    """Return the failure for a refused request, with the server's message."""
    text = await resp.text()
    message = text.strip()[:500] or resp.reason or "no details"
    with contextlib.suppress(ValueError):
        body = json.loads(text)
        if isinstance(body, dict) and body.get("message"):
            message = f"{body.get('code')}: {body['message']}"
            if body.get("hint"):
                message += f" ({body['hint']})"
    exit_code = _STATUS_EXITS.get(resp.status, EXIT_ERROR)
    return AskFailure(exit_code, f"HTTP {resp.status}: {message}")


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def ask(opts: AskOptions, out: TextIO, err: TextIO) -> int:
    """Run one ``ask`` on the running loop; SIGINT cancels the task on the server.

    Returns the exit code. Awaits the whole answer.
    """
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        asker = Asker(opts, session, out, err)
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()

        def interrupt() -> None:
            asker.interrupted = True
            if main is not None:
                main.cancel()

        loop.add_signal_handler(signal.SIGINT, interrupt)
        try:
            return await _guarded(asker)
        finally:
            loop.remove_signal_handler(signal.SIGINT)


async def _guarded(asker: Asker) -> int:
    try:
        return await asker.run()
    except asyncio.CancelledError:
        if not asker.interrupted:
            raise
        _uncancel()
        await asker.cancel_on_server()
        return EXIT_INTERRUPTED


def main(args: Any) -> int:
    """Entry point of ``llama-orch ask`` (``args`` from argparse). Returns the exit code.

    Blocks until the answer is complete or Ctrl-C.
    """
    try:
        opts = read_options(args, dict(os.environ), sys.stdin)
    except AskFailure as exc:
        print(f"llama-orch ask: {exc.message}", file=sys.stderr)
        return exc.exit_code
    try:
        return asyncio.run(ask(opts, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
