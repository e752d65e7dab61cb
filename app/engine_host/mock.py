"""The ``mock`` engine: paced, deterministic tokens with fault injection.

It implements the core's EngineControl port without any process or GPU, for
tests, benchmarks and demos. Text is a pure function of (seed, prompt, index).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from app.engine_host.publisher import PublishedStatus, StatusPublisher
from app.orchestrator.contracts import ErrorCode
from app.orchestrator.guardrails import CHARS_PER_TOKEN, prompt_chars
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.ports import EngineError, EngineRequest, PoolDescriptor

_WORDS = (
    "the",
    "a",
    "GPU",
    "pool",
    "token",
    "stream",
    "model",
    "queue",
    "home",
    "lab",
    "llama",
    "fast",
    "quiet",
    "bright",
    "river",
    "stone",
    "cloud",
    "orchard",
    "signal",
    "is",
    "runs",
    "waits",
    "sings",
    "and",
    "of",
    "to",
    "with",
    "über",
    "naïve",
    "日本",
)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MockSpec:
    """Configuration of one mock pool (the ``mock_*`` keys of a pool)."""

    pool_id: str
    model: str = "mock"
    ctx: int = 4096
    slots: int = 1
    device_mask: str = "mock"
    tokens_per_s: float = 50.0
    first_token_ms: float = 0.0
    fail_after_tokens: int = -1
    crash_after_tokens: int = -1
    hang_after_tokens: int = -1
    start_delay_ms: float = 0.0
    restart_delay_ms: float = 200.0
    decode_timeout_s: float = 60.0
    demo: bool = False
    vram_estimate_bytes: int = 0
    engine: str = "mock"  # the engine name it reports (contract tests stand in for llamacpp)
    chars_per_token: float = CHARS_PER_TOKEN
    """How densely the mock's tokenizer packs text. The default matches the core's size
    estimate; a lower value models text (code, other scripts) that takes more tokens
    than estimated, so an admitted answer can run into the context limit."""


def mock_token(seed: int | None, prompt_key: str, index: int) -> str:
    """Return the token text at ``index`` for a seed and prompt (pure)."""
    digest = hashlib.blake2b(f"{seed}|{prompt_key}|{index}".encode(), digest_size=4).digest()
    word = _WORDS[int.from_bytes(digest, "big") % len(_WORDS)]
    return word if index == 0 else " " + word


def _prompt_key(request: EngineRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    return "\n".join(f"{m.role}:{m.content}" for m in request.messages or ())


def mock_prompt_tokens(request: EngineRequest, chars_per_token: float) -> int:
    """Return the prompt's size in the mock tokenizer: the core's character count
    (message framing included) at ``chars_per_token`` characters a token. Pure."""
    contents = (m.content for m in request.messages or ())
    chars = prompt_chars(request.prompt, contents)
    return max(1, math.ceil(chars / max(chars_per_token, 0.1)))


class MockStream:
    """An EngineStream that paces deterministic tokens and injects faults."""

    def __init__(self, engine: MockEngine, request: EngineRequest, sleep: Sleep) -> None:
        self._engine = engine
        self._spec = engine.spec
        self._request = request
        self._sleep = sleep
        self._key = _prompt_key(request)
        self._seed = request.seed if request.seed is not None else random.getrandbits(32)
        self._i = 0
        self._closed = False
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = mock_prompt_tokens(request, engine.spec.chars_per_token)

    def __aiter__(self) -> MockStream:
        return self

    async def __anext__(self) -> str:
        if self._closed or self._i >= self._request.max_tokens or self._context_full():
            self.finish_reason = self.finish_reason or "length"
            raise StopAsyncIteration
        await self._before_token()
        text = mock_token(self._seed, self._key, self._i)
        self._i += 1
        return text

    def _context_full(self) -> bool:
        """Return True once the prompt and the tokens written fill the pool's context,
        where a real engine stops with finish_reason "length"."""
        return (self.prompt_tokens or 0) + self._i >= self._spec.ctx

    async def _before_token(self) -> None:
        spec = self._spec
        if self._i == 0 and spec.first_token_ms > 0:
            await self._sleep(spec.first_token_ms / 1000)
        elif spec.tokens_per_s > 0:
            await self._sleep(1.0 / spec.tokens_per_s)
        else:
            await asyncio.sleep(0)
        if self._i == spec.fail_after_tokens:
            raise EngineError(ErrorCode.INTERNAL, "mock engine reported an error (injected)")
        if self._i == spec.crash_after_tokens:
            self._engine.crash()
            raise EngineError(
                ErrorCode.WORKER_RESET, "engine process exited mid-stream", retriable=True
            )
        if self._i == spec.hang_after_tokens:
            await self._hang()

    async def _hang(self) -> None:
        try:
            await asyncio.wait_for(asyncio.Event().wait(), self._spec.decode_timeout_s)
        except TimeoutError:
            raise EngineError(
                ErrorCode.DECODE_TIMEOUT,
                f"no token within {self._spec.decode_timeout_s:g} s",
                retriable=True,
            ) from None

    async def aclose(self) -> None:
        """Stop the stream; later iteration ends at once."""
        if not self._closed:
            self._closed = True
            self._engine.closed_streams += 1


class MockEngine(PublishedStatus):
    """EngineControl for a ``mock`` pool. State changes follow the pool table and are
    reported to listeners."""

    def __init__(self, spec: MockSpec, *, sleep: Sleep = asyncio.sleep) -> None:
        self.spec = spec
        self._sleep = sleep
        descriptor = PoolDescriptor(
            pool_id=spec.pool_id,
            engine=spec.engine,
            engine_version="mock-1",
            model=spec.model,
            ctx=spec.ctx,
            slots=spec.slots,
            device_mask=spec.device_mask,
            demo=spec.demo,
            vram_estimate_bytes=spec.vram_estimate_bytes,
        )
        self._pool = StatusPublisher(descriptor)
        self._tasks: set[asyncio.Task[None]] = set()
        self.opened_streams = 0
        self.closed_streams = 0
        self.crashes = 0

    def _set(self, state: PoolState, detail: str = "") -> None:
        self._pool.publish(
            state,
            detail,
            crashes_recent=self.crashes,
            crashes_total=self.crashes,
            restarts_total=self.crashes,  # every mock crash restarts
        )

    async def start(self) -> None:
        """Report starting, then ready after ``start_delay_ms`` (in the background)."""
        self._set(PoolState.STARTING, "starting mock engine")
        self._spawn(self._become_ready(self.spec.start_delay_ms))

    async def _become_ready(self, delay_ms: float) -> None:
        if delay_ms > 0:
            await self._sleep(delay_ms / 1000)
        if self._pool.state is PoolState.STARTING:
            self._set(PoolState.READY)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def crash(self) -> None:
        """Simulate an engine crash: restart after ``restart_delay_ms``."""
        self.crashes += 1
        self._set(PoolState.STARTING, "restarting after a crash")
        self._spawn(self._become_ready(self.spec.restart_delay_ms))

    def fail(self, detail: str = "failed (injected)") -> None:
        """Mark the pool failed, as supervision does after too many crashes."""
        self._set(PoolState.FAILED, detail)

    async def stop(self) -> None:
        """Cancel the pending state changes and report stopping, then stopped."""
        for task in list(self._tasks):
            task.cancel()
        if self._pool.can(PoolState.STOPPING):
            self._set(PoolState.STOPPING, "stopping")
        if self._pool.can(PoolState.STOPPED):
            self._set(PoolState.STOPPED)

    async def open_stream(self, request: EngineRequest) -> MockStream:
        if not self._pool.state.serving:
            raise EngineError(
                ErrorCode.POOL_UNREADY, f"pool {self.spec.pool_id} is not ready", retriable=True
            )
        self.opened_streams += 1
        return MockStream(self, request, self._sleep)

    async def reload(self, model_ref: str) -> str:
        """Switch the served model name; a ref starting with 'bad' fails (for tests)."""
        if model_ref.startswith("bad"):
            raise EngineError(ErrorCode.INTERNAL, f"cannot load model '{model_ref}'")
        self._pool.descriptor = replace(self._pool.descriptor, model=model_ref)
        self._set(self._pool.state, f"serving {model_ref}")
        return f"now serving {model_ref}"

    async def restart(self) -> None:
        self._set(PoolState.STARTING, "restarting")
        self._spawn(self._become_ready(self.spec.restart_delay_ms))
