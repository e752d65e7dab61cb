"""A paced OpenAI-compatible engine for benchmarks: tokens at a fixed gap per stream.

Serves ``GET /v1/models``, ``POST /v1/chat/completions`` and
``POST /v1/completions`` (``stream`` true or false) with any number of
concurrent streams. Every stream emits its tokens ``gap_ms`` apart on an
absolute schedule (no drift), so a client sees the engine's pace plus whatever
sits in between. Chunks are encoded once at start-up: the per-token work is
one timer and one socket write.

Run ``python -m bench.paced_engine --port 8001 --gap-ms 20 --tokens 64``.
A request's ``max_tokens`` lowers the token count of that stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL = "paced"
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def token_text(index: int) -> str:
    """Return the text of token ``index`` of every stream (a word and a space)."""
    return WORDS[index % len(WORDS)] + " "


def _frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _chat_chunk(model: str, delta: dict[str, str], reason: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-paced",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
    }


def _text_chunk(model: str, text: str, reason: str | None) -> dict[str, Any]:
    return {
        "id": "cmpl-paced",
        "object": "text_completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": reason}],
    }


@dataclass(frozen=True)
class Frames:
    """Pre-encoded SSE frames of one endpoint: one per word, and the two finishes."""

    kind: str
    tokens: tuple[bytes, ...]
    finish_stop: bytes
    finish_length: bytes

    @classmethod
    def chat(cls, model: str) -> Frames:
        """Return the frames of ``/v1/chat/completions``."""
        words = range(len(WORDS))
        return cls(
            kind="chat.completion.chunk",
            tokens=tuple(
                _frame(_chat_chunk(model, {"content": token_text(i)}, None)) for i in words
            ),
            finish_stop=_frame(_chat_chunk(model, {}, "stop")),
            finish_length=_frame(_chat_chunk(model, {}, "length")),
        )

    @classmethod
    def text(cls, model: str) -> Frames:
        """Return the frames of ``/v1/completions``."""
        words = range(len(WORDS))
        return cls(
            kind="text_completion",
            tokens=tuple(_frame(_text_chunk(model, token_text(i), None)) for i in words),
            finish_stop=_frame(_text_chunk(model, "", "stop")),
            finish_length=_frame(_text_chunk(model, "", "length")),
        )


@dataclass
class PacedEngine:
    """The engine's settings and counters; ``make_app`` serves it."""

    gap_ms: float = 20.0
    tokens: int = 64
    first_token_ms: float = 0.0
    model: str = MODEL
    streams_started: int = 0
    tokens_sent: int = 0
    _chat: Frames = field(init=False)
    _text: Frames = field(init=False)

    def __post_init__(self) -> None:
        self._chat = Frames.chat(self.model)
        self._text = Frames.text(self.model)

    def count_for(self, body: dict[str, Any]) -> int:
        """Return how many tokens to send for a request ``body`` (its max_tokens caps it)."""
        limit = body.get("max_tokens")
        if isinstance(limit, int) and limit > 0:
            return min(limit, self.tokens)
        return self.tokens

    def usage_frame(self, kind: str, count: int) -> bytes:
        """Return the usage-only chunk sent when the client asks for usage."""
        usage = {"prompt_tokens": 4, "completion_tokens": count, "total_tokens": 4 + count}
        return _frame(
            {
                "id": "paced",
                "object": kind,
                "created": 0,
                "model": self.model,
                "choices": [],
                "usage": usage,
            }
        )

    async def models(self, _request: web.Request) -> web.Response:
        """``GET /v1/models``: the one model served."""
        item = {"id": self.model, "object": "model", "created": 0, "owned_by": "bench"}
        return web.json_response({"object": "list", "data": [item]}, headers={"Server": "paced"})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        return await self._complete(request, self._chat, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/completions``."""
        return await self._complete(request, self._text, chat=False)

    async def _complete(
        self, request: web.Request, frames: Frames, *, chat: bool
    ) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        count = self.count_for(body)
        self.streams_started += 1
        if body.get("stream"):
            return await self._stream(request, frames, body, count)
        await asyncio.sleep((self.first_token_ms + self.gap_ms * max(0, count - 1)) / 1000.0)
        self.tokens_sent += count
        return web.json_response(self._whole(body, count, chat=chat))

    async def _stream(
        self, request: web.Request, frames: Frames, body: dict[str, Any], count: int
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        gap = self.gap_ms / 1000.0
        start = loop.time() + self.first_token_ms / 1000.0
        tokens = frames.tokens
        width = len(tokens)
        try:
            for i in range(count):
                delay = start + i * gap - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await resp.write(tokens[i % width])
                self.tokens_sent += 1
        except ConnectionError:
            return resp  # the client went away: stop generating, as engines do
        reason_length = isinstance(body.get("max_tokens"), int) and count == body["max_tokens"]
        tail = frames.finish_length if reason_length else frames.finish_stop
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            tail += self.usage_frame(frames.kind, count)
        await resp.write(tail + DONE)
        await resp.write_eof()
        return resp

    def _whole(self, body: dict[str, Any], count: int, *, chat: bool) -> dict[str, Any]:
        text = "".join(token_text(i) for i in range(count))
        limit = body.get("max_tokens")
        reason = "length" if isinstance(limit, int) and count == limit else "stop"
        usage = {"prompt_tokens": 4, "completion_tokens": count, "total_tokens": 4 + count}
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "finish_reason": reason,
                "message": {"role": "assistant", "content": text},
            }
            kind = "chat.completion"
        else:
            choice = {"index": 0, "finish_reason": reason, "text": text}
            kind = "text_completion"
        created = int(time.time())
        return {
            "id": "paced",
            "object": kind,
            "created": created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
        }

    def make_app(self) -> web.Application:
        """Return the aiohttp application serving this engine."""
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        return app


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    return web.json_response(body, status=status)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the command line of ``python -m bench.paced_engine``."""
    p = argparse.ArgumentParser(prog="python -m bench.paced_engine", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="port to listen on")
    p.add_argument("--gap-ms", type=float, default=20.0, help="milliseconds between tokens")
    p.add_argument("--tokens", type=int, default=64, help="tokens per stream (max_tokens caps)")
    p.add_argument("--first-token-ms", type=float, default=0.0, help="delay of the first token")
    p.add_argument("--model", default=MODEL, help="the model id served")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until interrupted. Blocks."""
    args = parse_args(argv)
    engine = PacedEngine(
        gap_ms=args.gap_ms, tokens=args.tokens, first_token_ms=args.first_token_ms, model=args.model
    )
    print(f"paced engine on http://{args.host}:{args.port}/v1", flush=True)
    web.run_app(
        engine.make_app(),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()
