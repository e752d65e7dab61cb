"""llama-server's parallel slots on the demo model (CPU): four streams decode at
once, each slot gets the pool's context, a closed stream frees its slot at once,
and the engine's own slot count and metrics reach the orchestrator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from app.engine_host.llamacpp import LlamaCppEngine, LlamaCppSpec
from app.engine_host.llamacpp_stats import EngineMetrics, busy_slots, parse_metrics
from app.engine_host.openai_client import OpenAIStream
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.ports import EngineRequest

pytestmark = pytest.mark.engine
shared_loop = pytest.mark.asyncio(loop_scope="module")
CTX = 2048  # at most the demo model's trained context (llama-server caps a slot there)


def request(max_tokens: int, seed: int = 1) -> EngineRequest:
    return EngineRequest(
        prompt="Hello", messages=None, max_tokens=max_tokens, temperature=0.8, seed=seed
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(
    demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LlamaCppEngine]:
    spec = LlamaCppSpec(
        "par4", f"file:{demo_model_path}", ctx=CTX, slots=4, device_mask="cpu", demo=True,
        stats_interval_s=0.1,
    )  # fmt: skip
    pool = LlamaCppEngine(spec, log_dir=tmp_path_factory.mktemp("logs"))
    await pool.start()
    await pool.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=60.0)
    yield pool
    await pool.stop()


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, step_s: float) -> None:
    """Await ``check`` every ``step_s`` until it is true or ``timeout_s`` passed."""
    for _ in range(int(timeout_s / step_s)):
        if await check():
            return
        await asyncio.sleep(step_s)


async def decodes(engine: LlamaCppEngine) -> float:
    """Return the engine's count of decode steps (``llamacpp:n_decode_total``), read after
    two rounds of its stats poll."""
    await asyncio.sleep(0.25)
    for family in engine.stats.families:
        for sample in family.samples:
            if sample.name == "llamacpp:n_decode_total":
                return float(sample.value)
    raise AssertionError("the engine reports no llamacpp:n_decode_total")


async def busy_stream(engine: LlamaCppEngine) -> tuple[OpenAIStream, float]:
    """Open a long stream and return it once the engine shows its slot busy, with the
    engine's decode count from just before it was opened.

    The engine decodes ahead of the reader into the socket buffers and can finish the
    whole answer while a loaded machine holds the test back: such a stream is closed
    and another one opened (three tries).
    """
    for seed in range(3):
        before = await decodes(engine)
        stream = await engine.open_stream(request(CTX - 64, seed))
        for _ in range(5):
            await anext(stream)
        if busy_slots(await engine.read_slots()) == 1:
            return stream, before
        await stream.aclose()
    raise AssertionError("no stream kept a slot busy long enough to be seen")


async def timeline(engine: LlamaCppEngine, max_tokens: int, seed: int) -> list[float]:
    stream = await engine.open_stream(request(max_tokens, seed))
    return [time.monotonic() async for _ in stream]


@shared_loop
async def test_four_slots_each_with_the_pool_context(engine: LlamaCppEngine) -> None:
    assert engine.status.state is PoolState.READY, engine.status.detail
    assert engine.descriptor.slots == 4
    slots = await engine.read_slots()
    assert [s["n_ctx"] for s in slots] == [CTX] * 4  # -c is divided among the slots
    assert busy_slots(slots) == 0


@shared_loop
async def test_four_concurrent_streams_decode_at_the_same_time(engine: LlamaCppEngine) -> None:
    lines = await asyncio.gather(*(timeline(engine, 600, seed) for seed in range(4)))
    assert all(len(times) >= 300 for times in lines), [len(t) for t in lines]
    starts = [times[0] for times in lines]
    ends = [times[-1] for times in lines]
    # every stream was producing tokens before any of them finished: they overlapped
    assert max(starts) < min(ends)
    # and each stream's tokens interleave with the others' (not one after another)
    window = (max(starts), min(ends))
    assert all(sum(window[0] <= t <= window[1] for t in times) > 50 for times in lines)


@shared_loop
async def test_busy_slots_come_from_the_engine(engine: LlamaCppEngine) -> None:
    streams = [await engine.open_stream(request(CTX - 64, seed)) for seed in range(3)]
    try:
        for stream in streams:
            await anext(stream)

        async def three() -> bool:
            return engine.engine_busy_slots == 3

        await until(three, 5.0, 0.05)
        assert engine.engine_busy_slots == 3
    finally:
        for stream in streams:
            await stream.aclose()


@shared_loop
async def test_a_closed_stream_frees_its_slot_within_a_second(engine: LlamaCppEngine) -> None:
    stream, decodes_before = await busy_stream(engine)
    await stream.aclose()
    closed = time.monotonic()

    async def idle() -> bool:
        return busy_slots(await engine.read_slots()) == 0

    await until(idle, 3.0, 0.02)
    assert busy_slots(await engine.read_slots()) == 0
    assert time.monotonic() - closed < 1.0
    # and the engine stopped decoding before the end of the answer (CTX - 64 tokens)
    assert await decodes(engine) - decodes_before < 0.9 * (CTX - 64)


@shared_loop
async def test_engine_metrics_are_re_exported_with_the_pool_label(
    engine: LlamaCppEngine,
) -> None:
    async def reported() -> bool:
        return bool(engine.stats.families)

    await until(reported, 5.0, 0.05)
    collector = EngineMetrics(lambda: [({"pool_id": "par4"}, engine.stats)])
    samples = {s.name: s for family in collector.collect() for s in family.samples}
    predicted = samples["llamacpp:tokens_predicted_total"]
    assert predicted.labels == {"pool_id": "par4"}
    assert predicted.value > 0
    assert "llamacpp:requests_processing" in samples


def test_slot_and_metric_parsing() -> None:
    assert busy_slots([{"is_processing": True}, {"is_processing": False}, 3]) == 1
    assert busy_slots({"error": "x"}) is None
    text = "# TYPE llamacpp:n_decode_total counter\nllamacpp:n_decode_total 3\nother 1\n"
    (family,) = parse_metrics(text)
    assert family.samples[0].value == 3
    assert parse_metrics("garbage {{{") == ()


async def turn(engine: LlamaCppEngine, text: str, session: str) -> tuple[str, float, OpenAIStream]:
    started = time.monotonic()
    stream = await engine.open_stream(
        EngineRequest(
            prompt=text, messages=None, max_tokens=8, temperature=0.0, seed=3, session_id=session
        )
    )
    assert isinstance(stream, OpenAIStream)
    tokens = [await anext(stream)]
    ttft = time.monotonic() - started
    tokens += [t async for t in stream]
    return "".join(tokens), ttft, stream


@shared_loop
async def test_a_sessions_second_turn_finds_its_kv_cache_warm(engine: LlamaCppEngine) -> None:
    words = "the queue runs on a slot and the model writes a word " * 50  # ~1,200 tokens
    first, ttft_1, stream_1 = await turn(engine, "Story: " + words, "s-1")
    assert stream_1.expected_warm is False
    assert stream_1.prompt_tokens is not None and stream_1.prompt_tokens > 1000
    assert (stream_1.cached_tokens or 0) < 10
    await turn(engine, "Other: " + words, "s-2")  # another session takes another slot
    _, ttft_2, stream_2 = await turn(engine, "Story: " + words + first + " and", "s-1")
    assert stream_2.expected_warm is True
    assert stream_2.kv_warm is True
    assert stream_2.cached_tokens is not None
    assert stream_2.cached_tokens >= stream_1.prompt_tokens - 1
    print(f"TTFT turn 1 {ttft_1 * 1000:.1f} ms, turn 2 (warm) {ttft_2 * 1000:.1f} ms")
