"""A real llama.cpp engine (llama.cpp's llama-server) on the generated demo model, on CPU."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from app.engine_host.llamacpp import (
    LlamaCppEngine,
    LlamaCppSpec,
    model_id_for,
    resolve_model_ref,
)
from app.engine_host.llamacpp_launch import (
    build_command,
    engine_env,
    features_from_props,
    missing_gpus_sentence,
)
from app.engine_host.restart_policy import RestartPolicy
from app.orchestrator.contracts import ChatMessage, ErrorCode
from app.orchestrator.lifecycle import PoolState
from app.orchestrator.ports import EngineControl, EngineError, EngineRequest, PoolStatus
from tests.engine_host.support import alive
from tests.support.gguf_files import BAD_KINDS, with_tensors, write_bad

pytestmark = pytest.mark.engine
# Tests that share the module's engine run on the module's event loop.
shared_loop = pytest.mark.asyncio(loop_scope="module")

FAST_POLICY = RestartPolicy(base_s=0.05, cap_s=0.2, jitter=0.0)
READY_TIMEOUT_S = 60.0
LONG = 16384


def state_of(pool: LlamaCppEngine) -> PoolState:
    return pool.status.state


def prompt(text: str = "Hello", *, max_tokens: int = 16, seed: int | None = 42) -> EngineRequest:
    return EngineRequest(
        prompt=text, messages=None, max_tokens=max_tokens, temperature=0.8, seed=seed
    )


async def decode(engine: LlamaCppEngine, request: EngineRequest) -> list[str]:
    stream = await engine.open_stream(request)
    try:
        return [token async for token in stream]
    finally:
        await stream.aclose()


def cpu_spec(
    pool_id: str, model_ref: str | None, *, ctx: int = 512, **kwargs: object
) -> LlamaCppSpec:
    return LlamaCppSpec(
        pool_id=pool_id,
        model_ref=model_ref,
        ctx=ctx,
        device_mask="cpu",
        demo=True,
        startup_timeout_s=READY_TIMEOUT_S,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(
    demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LlamaCppEngine]:
    """One engine for the module; tests that crash it wait until it is ready again."""
    # a long context: llama-server decodes the demo model at thousands of tokens
    # a second, so a stream must be long to still be running when a test acts on it
    spec = cpu_spec("cpu0", f"file:{demo_model_path}", ctx=LONG, decode_timeout_s=3.0)
    pool = LlamaCppEngine(spec, log_dir=tmp_path_factory.mktemp("logs"), policy=FAST_POLICY)
    await pool.start()
    await pool.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=READY_TIMEOUT_S)
    yield pool
    await pool.stop()


@shared_loop
async def test_pool_becomes_ready_after_health_and_warm_up(engine: LlamaCppEngine) -> None:
    assert isinstance(engine, EngineControl)
    assert engine.status.state is PoolState.READY, engine.status.detail
    descriptor = engine.descriptor
    assert descriptor.model == "demo"
    assert descriptor.engine == "llamacpp"
    assert descriptor.device_mask == "cpu"
    log = engine.log_path.read_text()
    assert descriptor.engine_version.startswith("llama-server 0.")
    assert descriptor.slots == 1
    assert "-ngl 0" in log
    assert "--parallel 1" in log
    assert "stop processing: n_tokens" in log  # the warm-up decode ran in a slot
    assert "--api-key" not in log  # the key travels in the environment only


@shared_loop
async def test_prompt_and_chat_stream_tokens(engine: LlamaCppEngine) -> None:
    stream = await engine.open_stream(prompt(max_tokens=8))
    tokens = [token async for token in stream]
    assert 1 <= len(tokens) <= 8
    assert all(tokens)
    assert stream.finish_reason in ("stop", "length")

    chat = EngineRequest(
        prompt=None,
        messages=[ChatMessage(role="user", content="Say hello")],
        max_tokens=6,
        temperature=0.0,
        seed=1,
    )
    assert len(await decode(engine, chat)) >= 1


@shared_loop
async def test_same_seed_and_prompt_give_identical_streams(engine: LlamaCppEngine) -> None:
    first = await decode(engine, prompt("The queue", max_tokens=24, seed=1234))
    second = await decode(engine, prompt("The queue", max_tokens=24, seed=1234))
    assert len(first) >= 8
    assert "".join(first).encode() == "".join(second).encode()
    assert first == second


@shared_loop
async def test_closing_a_stream_early_stops_the_engine(engine: LlamaCppEngine) -> None:
    # A full 2000-token decode takes many seconds here; the engine serves one
    # request at a time, so a prompt follow-up proves the first one stopped.
    stream = await engine.open_stream(prompt(max_tokens=LONG - 16))
    for _ in range(3):
        await anext(stream)
    await stream.aclose()
    started = time.monotonic()
    assert await decode(engine, prompt(max_tokens=4))
    assert time.monotonic() - started < 3.0


@shared_loop
async def test_killed_engine_resets_the_stream_and_the_pool_recovers(
    engine: LlamaCppEngine,
) -> None:
    statuses: list[PoolStatus] = []
    engine.add_listener(statuses.append)
    pid = engine.engine_pid
    assert pid is not None
    stream = await engine.open_stream(prompt(max_tokens=LONG - 16))
    await anext(stream)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    with pytest.raises(EngineError) as caught:
        async for _ in stream:
            pass
    assert time.monotonic() - killed_at < 1.0
    assert caught.value.code is ErrorCode.WORKER_RESET
    assert caught.value.retriable

    await engine.wait_for(PoolState.STARTING, timeout_s=5.0)
    status = await engine.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=READY_TIMEOUT_S)
    assert status.state is PoolState.READY
    assert status.crashes_recent == 1
    assert any("crashed while serving" in s.detail for s in statuses)
    assert engine.engine_pid not in (None, pid)
    assert not alive(pid)
    assert await decode(engine, prompt(max_tokens=4))


@shared_loop
async def test_hung_engine_times_out_and_is_restarted(engine: LlamaCppEngine) -> None:
    pid = engine.engine_pid
    assert pid is not None
    stream = await engine.open_stream(prompt(max_tokens=LONG - 16))
    await anext(stream)
    os.kill(pid, signal.SIGSTOP)  # alive but silent: a hung engine
    try:
        with pytest.raises(EngineError) as caught:
            async for _ in stream:
                pass
        assert caught.value.code is ErrorCode.DECODE_TIMEOUT
        await engine.wait_for(PoolState.STARTING, timeout_s=5.0)
        assert "hung" in engine.status.detail
        status = await engine.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=60.0)
        assert status.state is PoolState.READY
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert await decode(engine, prompt(max_tokens=4))


@shared_loop
async def test_engine_that_hangs_before_answering_is_killed_and_restarted(
    engine: LlamaCppEngine,
) -> None:
    """No response headers within the decode timeout counts as a hang, like a silent stream."""
    await engine.wait_for(PoolState.READY, timeout_s=READY_TIMEOUT_S)
    pid = engine.engine_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # an idle engine that stopped answering
    try:
        with pytest.raises(EngineError) as caught:
            await engine.open_stream(prompt(max_tokens=4))
        assert caught.value.code is ErrorCode.DECODE_TIMEOUT
        await engine.wait_for(PoolState.STARTING, timeout_s=2.0)
        assert "hung" in engine.status.detail
        status = await engine.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=60.0)
        assert status.state is PoolState.READY
        assert engine.engine_pid not in (None, pid)
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert await decode(engine, prompt(max_tokens=4))


async def test_health_probe_kills_an_engine_that_stopped_answering(
    demo_model_path: Path, engine_log_dir: Path
) -> None:
    """An idle engine that stops answering is found by the probe, without any task."""
    spec = cpu_spec("probed", str(demo_model_path), health_interval_s=0.3, health_timeout_s=0.5)
    pool = LlamaCppEngine(spec, log_dir=engine_log_dir, policy=FAST_POLICY)
    pid = None
    try:
        await pool.start()
        await pool.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=READY_TIMEOUT_S)
        await asyncio.sleep(1.0)  # a few probes of a healthy engine change nothing
        assert pool.status.state is PoolState.READY
        pid = pool.engine_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        await pool.wait_for(PoolState.STARTING, timeout_s=5.0)
        assert "health probe" in pool.status.detail
        status = await pool.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=READY_TIMEOUT_S)
        assert status.state is PoolState.READY
        assert pool.engine_pid not in (None, pid)
        assert (status.crashes_total, status.restarts_total) == (1, 1)
    finally:
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)
        await pool.stop()


async def test_a_missing_model_file_means_the_pool_needs_a_model(engine_log_dir: Path) -> None:
    """No crash loop and no engine: the pool waits for a model and names the path."""
    missing = engine_log_dir / "nowhere" / "absent.gguf"
    pool = LlamaCppEngine(cpu_spec("bad", f"file:{missing}"), log_dir=engine_log_dir)
    statuses: list[PoolStatus] = []
    pool.add_listener(statuses.append)
    try:
        await pool.start()
        status = await pool.wait_for(PoolState.NEEDS_MODEL, PoolState.READY, timeout_s=10.0)
        assert status.state is PoolState.NEEDS_MODEL
        assert status.detail.startswith("needs a model")
        assert str(missing) in status.detail
        await asyncio.sleep(0.3)
        assert [s.state for s in statuses] == [PoolState.NEEDS_MODEL]
        assert pool.status.crashes_recent == 0
        assert pool.engine_pid is None
        with pytest.raises(EngineError) as caught:
            await pool.open_stream(prompt())
        assert caught.value.code is ErrorCode.POOL_UNREADY
    finally:
        await pool.stop()
    assert state_of(pool) is PoolState.STOPPED


async def test_engine_that_dies_while_loading_is_a_load_failure(engine_log_dir: Path) -> None:
    broken = with_tensors(engine_log_dir, "broken.gguf", "llama")
    pool = LlamaCppEngine(cpu_spec("broken", str(broken)), log_dir=engine_log_dir)
    try:
        await pool.start()
        status = await pool.wait_for(PoolState.FAILED, PoolState.READY, timeout_s=30.0)
    finally:
        await pool.stop()
    assert status.state is PoolState.FAILED
    # llama-server's own output names the missing key; the pool says it in one sentence
    assert status.detail == (
        "load failed: the model file lacks llama.context_length, which llama.cpp needs; "
        "it may be incomplete or made for another program"
    )
    assert "crashed while serving" not in status.detail
    # the engine's own output (a traceback naming install paths) stays in the pool's log
    for leak in ("Traceback", 'File "', "site-packages", "llama_cpp", ".py"):
        assert leak not in status.detail
    assert "Traceback" in pool.log_path.read_text() or "error" in pool.log_path.read_text()


async def test_missing_and_non_gguf_files_get_one_answer_without_an_engine(
    engine_log_dir: Path,
) -> None:
    """Reload names no difference between a missing path and an existing non-GGUF file."""
    existing = engine_log_dir / "notes.txt"
    existing.write_text("not a model\n")
    folder = engine_log_dir / "a-folder"
    folder.mkdir()
    pool = LlamaCppEngine(cpu_spec("probe", None), log_dir=engine_log_dir)
    answers = []
    try:
        await pool.start()
        for path in (existing, engine_log_dir / "missing.gguf", folder):
            with pytest.raises(EngineError) as caught:
                await pool.reload(str(path))
            assert caught.value.code is ErrorCode.INVALID_PARAMS
            answers.append(caught.value.message.replace(str(path), "PATH"))
            assert pool.status.detail.replace(str(path), "PATH") == answers[-1]
    finally:
        await pool.stop()
    assert len(set(answers)) == 1, answers
    assert "GGUF" in answers[0]
    assert not pool.log_path.exists(), "no engine may be spawned for a file without the GGUF magic"


@pytest.mark.parametrize("kind", BAD_KINDS)
async def test_pool_start_refuses_a_bad_model_file_with_one_sentence(
    engine_log_dir: Path, demo_gguf: bytes, kind: str
) -> None:
    bad, sentence = write_bad(kind, engine_log_dir, demo_gguf)
    pool = LlamaCppEngine(cpu_spec("bad", str(bad)), log_dir=engine_log_dir)
    try:
        await pool.start()
        status = await pool.wait_for(PoolState.FAILED, PoolState.READY, timeout_s=10.0)
    finally:
        await pool.stop()
    assert status.state is PoolState.FAILED
    assert sentence in status.detail
    assert "Traceback" not in status.detail and "exit" not in status.detail


async def test_without_a_model_the_pool_needs_one_and_runs_nothing(engine_log_dir: Path) -> None:
    pool = LlamaCppEngine(cpu_spec("empty", None), log_dir=engine_log_dir)
    await pool.start()
    assert pool.status.state is PoolState.NEEDS_MODEL
    assert pool.engine_pid is None
    await pool.stop()
    assert state_of(pool) is PoolState.STOPPED


async def test_commands_sent_while_stopping_are_refused(engine_log_dir: Path) -> None:
    pool = LlamaCppEngine(cpu_spec("late", None), log_dir=engine_log_dir)
    await pool.start()
    stopping = asyncio.create_task(pool.stop())
    await asyncio.sleep(0)
    with pytest.raises(EngineError, match="stopped"):
        await asyncio.wait_for(pool.restart(), timeout=5.0)
    await stopping
    assert state_of(pool) is PoolState.STOPPED
    await pool.start()
    assert state_of(pool) is PoolState.NEEDS_MODEL
    await pool.stop()


async def test_reload_swaps_after_ready_and_stop_leaves_no_process(
    demo_model_path: Path, engine_log_dir: Path
) -> None:
    other = engine_log_dir / "other.gguf"
    shutil.copy(demo_model_path, other)
    pool = LlamaCppEngine(cpu_spec("swap", str(demo_model_path)), log_dir=engine_log_dir)
    try:
        await pool.start()
        await pool.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=READY_TIMEOUT_S)
        first_pid = pool.engine_pid
        assert first_pid is not None

        with pytest.raises(EngineError) as caught:
            await pool.reload(str(engine_log_dir / "missing.gguf"))
        assert "missing.gguf" in caught.value.message
        assert pool.engine_pid == first_pid
        assert pool.descriptor.model == "demo"
        assert pool.status.state is PoolState.READY

        message = await pool.reload(f"file:{other}")
        assert "other" in message
        assert pool.descriptor.model == "other"
        second_pid = pool.engine_pid
        assert second_pid not in (None, first_pid)
        assert await decode(pool, prompt(max_tokens=4))
    finally:
        await pool.stop()
    assert state_of(pool) is PoolState.STOPPED
    assert pool.engine_pid is None
    for pid in (first_pid, second_pid):
        assert not alive(pid), f"engine process {pid} outlived stop()"


def test_model_references() -> None:
    assert resolve_model_ref("file:/m/x.gguf") == Path("/m/x.gguf")
    assert resolve_model_ref("file:///m/x%20y.gguf") == Path("/m/x y.gguf")
    assert resolve_model_ref("/m/x.gguf") == Path("/m/x.gguf")
    assert model_id_for("file:/m/demo.gguf") == "demo"
    assert model_id_for(None) == ""
    with pytest.raises(ValueError, match="unsupported scheme 'hf'"):
        resolve_model_ref("hf:org/model")


async def test_a_gpu_the_host_lacks_fails_fast_with_one_sentence(
    demo_model_path: Path, engine_log_dir: Path
) -> None:
    spec = LlamaCppSpec("gpu0", f"file:{demo_model_path}", device_mask="0")
    pool = LlamaCppEngine(spec, log_dir=engine_log_dir, gpu_indices=list)  # NVML: no GPU
    try:
        await pool.start()
        status = await pool.wait_for(PoolState.FAILED, PoolState.READY, timeout_s=5.0)
        assert status.state is PoolState.FAILED
        assert status.detail == (
            "load failed: GPU 0 not found: NVML sees no GPU; set allow_cpu_inference = true "
            'and device_mask = "cpu" to run on the CPU'
        )
        assert pool.engine_pid is None
        assert not (engine_log_dir / "gpu0.log").exists()  # no engine was started
    finally:
        await pool.stop()
    assert missing_gpus_sentence("0,2", [0, 1]) == (
        "GPU 2 not found: NVML sees GPU 0, 1; set allow_cpu_inference = true and "
        'device_mask = "cpu"'
        " to run on the CPU"
    )
    assert missing_gpus_sentence("0,1", [0, 1]) is None
    assert missing_gpus_sentence("cpu", []) is None


def test_command_line_gives_each_slot_the_pool_context_and_keeps_control() -> None:
    spec = LlamaCppSpec(
        "g", None, ctx=2048, slots=4, device_mask="0,1", tensor_split=(3.0, 1.0),
        flash_attn="on", cache_type_k="q8_0", extra_args=("--mlock",),
    )  # fmt: skip
    argv = build_command(spec, "/bin/llama-server", Path("/m/demo.gguf"), 4321).argv
    line = " ".join(argv)
    assert "--host 127.0.0.1 --port 4321" in line
    assert "--parallel 4 --cont-batching --no-kv-unified -c 8192" in line  # 4 x 2048
    assert "-ngl all" in line
    assert "--flash-attn on -ctk q8_0 -ctv f16 --tensor-split 3,1" in line
    assert "--jinja --metrics --slots --no-webui --alias demo --mlock" in line
    assert "--api-key" not in line
    cpu = build_command(
        LlamaCppSpec("c", None, device_mask="cpu", gpu_layers=10), "b", Path("m"), 1
    )
    assert "-ngl 0" in " ".join(cpu.argv)
    assert engine_env("cpu", "k1")["CUDA_VISIBLE_DEVICES"] == ""
    assert engine_env("0,1", "k1")["LLAMA_API_KEY"] == "k1"


async def test_retune_swaps_in_new_flags_atomically_and_rolls_back_a_bad_one(
    demo_model_path: Path, engine_log_dir: Path
) -> None:
    spec = cpu_spec("tune", str(demo_model_path))
    pool = LlamaCppEngine(spec, log_dir=engine_log_dir)
    try:
        await pool.start()
        await pool.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=READY_TIMEOUT_S)
        first_pid = pool.engine_pid
        bad = dataclasses.replace(spec, extra_args=("--no-such-flag",))
        with pytest.raises(EngineError, match="keeps serving"):
            await pool.retune(bad)
        assert pool.engine_pid == first_pid  # the old engine kept serving
        assert pool.status.state is PoolState.READY

        good = dataclasses.replace(spec, slots=2, extra_args=("--threads", "1"))
        assert "now serves demo" in await pool.retune(good)
        assert pool.engine_pid not in (None, first_pid)
        assert pool.descriptor.slots == 2
        header = [ln for ln in pool.log_path.read_text().splitlines() if "llama-orch pool" in ln]
        assert "--parallel 2" in header[-1] and "--threads 1" in header[-1]
        assert await decode(pool, prompt(max_tokens=4))
    finally:
        await pool.stop()
    assert not alive(first_pid) if first_pid else True


@pytest.mark.parametrize("kind", ["truncated", "absurd", "unknown_arch"])
async def test_reload_refuses_a_bad_model_file_before_any_engine(
    engine_log_dir: Path, demo_gguf: bytes, kind: str
) -> None:
    bad, sentence = write_bad(kind, engine_log_dir, demo_gguf)
    pool = LlamaCppEngine(cpu_spec("probe2", None), log_dir=engine_log_dir)
    try:
        await pool.start()
        with pytest.raises(EngineError) as caught:
            await pool.reload(str(bad))
    finally:
        await pool.stop()
    assert caught.value.code is ErrorCode.INVALID_PARAMS
    assert sentence in caught.value.message
    assert not pool.log_path.exists(), "no engine is spawned for a refused file"


@pytest.mark.parametrize(
    ("props", "tools"),
    [
        ({"chat_template_caps": {"supports_tools": False, "supports_tool_calls": False}}, False),
        ({"chat_template_caps": {"supports_tools": True}}, True),
        ({"chat_template": "..."}, True),  # an older build without the caps
        (None, True),
    ],
)
def test_tools_are_a_feature_only_where_the_chat_template_supports_them(
    props: object, tools: bool
) -> None:
    features = features_from_props(props)
    assert ("tools" in features) is tools
    assert {"json_schema", "logprobs"} <= features


async def test_the_pool_says_loading_until_the_model_serves(
    demo_model_path: Path, engine_log_dir: Path
) -> None:
    pool = LlamaCppEngine(cpu_spec("load", f"file:{demo_model_path}"), log_dir=engine_log_dir)
    statuses: list[PoolStatus] = []
    pool.add_listener(statuses.append)
    try:
        await pool.start()
        await pool.wait_for(PoolState.READY, PoolState.FAILED, timeout_s=READY_TIMEOUT_S)
        before_ready = [s for s in statuses if s.state is not PoolState.READY]
        assert before_ready and all(s.state is PoolState.STARTING for s in before_ready)
        assert all("loading demo" in s.detail for s in before_ready), before_ready
        assert statuses[-1].state is PoolState.READY
    finally:
        await pool.stop()
