"""Launching one llama.cpp engine process and waiting until it is ready.

A launch resolves the model file, picks the engine program (``llama-server``
when configured or on PATH, else ``python -m llama_cpp.server``), spawns it on
a free loopback port with its output appended to the pool's log, waits for
the health check and runs a one-token warm-up decode. The launching task owns
the process until it hands the ready ``EngineProcess`` over; a failed or
cancelled launch leaves no process behind.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import shutil
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from app.engine_host import process
from app.engine_host.gguf_info import gguf_problem
from app.engine_host.openai_client import open_stream
from app.engine_host.restart_policy import classify_exit
from app.orchestrator.contracts import ErrorCode
from app.orchestrator.ports import EngineError

log = logging.getLogger(__name__)

_POLL_S = 0.1
_WARMUP_PROMPT = "Hello"


@dataclass(frozen=True)
class LlamaCppSpec:
    """How to run one pool's llama.cpp engine (see the config's ``[[pools]]``)."""

    pool_id: str
    model_ref: str | None
    ctx: int = 4096
    slots: int = 1
    device_mask: str = "0"
    server_binary: str | None = None
    demo: bool = False
    startup_timeout_s: float = 120.0
    decode_timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    extra_args: tuple[str, ...] = ()
    stop_grace_s: float = 5.0
    needs_model_detail: str = ""
    """What the pool says while it has no model (e.g. the ref to download)."""
    health_interval_s: float = 10.0
    health_timeout_s: float = 5.0


def resolve_model_ref(model_ref: str) -> Path:
    """Return the file path named by ``model_ref`` ("file:/p", "file:///p" or a plain path).

    Raises ValueError for another scheme (e.g. "hf:..."). Does not touch the disk.
    """
    if model_ref.startswith("file:"):
        parsed = urllib.parse.urlparse(model_ref)
        return Path(urllib.parse.unquote(parsed.path)).expanduser()
    scheme = urllib.parse.urlparse(model_ref).scheme
    if len(scheme) > 1:
        raise ValueError(
            f"model reference {model_ref!r} uses the unsupported scheme {scheme!r}; "
            "give a local GGUF file as 'file:/path/model.gguf' or a plain path"
        )
    return Path(model_ref).expanduser()


def load_failure_reason(returncode: int | None, tail: str) -> str:
    """Return the plain sentence shown when an engine stops before it is ready. Pure.

    The engine's own output (which can hold tracebacks and install paths)
    never goes into the sentence: it stays in the pool's log. This is the one
    place that turns an engine's exit into words for API answers and the
    pool's ``detail``.
    """
    cause = classify_exit(returncode, tail)
    return f"the engine could not load the model file ({cause}); see the pool's log"


def model_id_for(model_ref: str | None) -> str:
    """Return the model id a pool reports for ``model_ref``: the file stem ("" for None)."""
    if not model_ref:
        return ""
    try:
        return resolve_model_ref(model_ref).stem
    except ValueError:
        return model_ref


@dataclass(frozen=True)
class EngineCommand:
    """The program line of one engine launch and what it reports."""

    argv: tuple[str, ...]
    health_path: str
    version: str
    slots: int


def python_server_version() -> str:
    """Return "llama-cpp-python <version>" for the installed package."""
    try:
        return f"llama-cpp-python {importlib.metadata.version('llama_cpp_python')}"
    except importlib.metadata.PackageNotFoundError:
        return "llama-cpp-python (version unknown)"


def build_command(spec: LlamaCppSpec, binary: str | None, model: Path, port: int) -> EngineCommand:
    """Return the engine's command line for ``model`` on loopback ``port``. Pure.

    ``binary`` None selects ``python -m llama_cpp.server``, which serves one
    request at a time (reported as 1 slot).
    """
    cpu = spec.device_mask == "cpu"
    alias = model.stem
    if binary is not None:
        argv = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["-c", str(spec.ctx * spec.slots), "--parallel", str(spec.slots)]
        argv += ["-ngl", "0" if cpu else "999", "--alias", alias, *spec.extra_args]
        return EngineCommand(tuple(argv), "/health", "llama-server", spec.slots)
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
    argv += ["--model_alias", alias, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--n_ctx", str(spec.ctx), "--n_gpu_layers", "0" if cpu else "-1"]
    argv += ["--interrupt_requests", "false", *spec.extra_args]
    return EngineCommand(tuple(argv), "/v1/models", python_server_version(), 1)


def engine_env(device_mask: str) -> dict[str, str]:
    """Return the engine's environment: ours plus CUDA_VISIBLE_DEVICES for the mask."""
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = "" if device_mask == "cpu" else device_mask
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def llama_server_version(binary: str, timeout_s: float = 10.0) -> str:
    """Return "llama-server <version>" from ``binary --version``; never raises."""
    try:
        proc = await asyncio.create_subprocess_exec(
            binary,
            "--version",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError:
        return "llama-server (version unknown)"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        await process.kill(proc)
        return "llama-server (version unknown)"
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("version"):
            return "llama-server " + line.partition(":")[2].strip()
    return "llama-server (version unknown)"


class LaunchFailed(Exception):
    """An engine did not become ready. ``transient`` is False for configuration errors."""

    def __init__(self, detail: str, *, transient: bool, code: ErrorCode = ErrorCode.INTERNAL):
        super().__init__(detail)
        self.detail = detail
        self.transient = transient
        self.code = code


@dataclass
class EngineProcess:
    """A ready engine process, its address and what it runs."""

    proc: asyncio.subprocess.Process
    base_url: str
    model_ref: str
    command: EngineCommand
    log_offset: int
    exited: asyncio.Task[int] = field(init=False)

    def __post_init__(self) -> None:
        self.exited = asyncio.ensure_future(self.proc.wait())

    @property
    def model_id(self) -> str:
        """Return the model id the engine serves (the file stem)."""
        return model_id_for(self.model_ref)


class EngineLauncher:
    """Launches engines for one pool; shares the pool's HTTP session."""

    def __init__(
        self,
        spec: LlamaCppSpec,
        *,
        log_path: Path,
        session: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self._spec = spec
        self._log_path = log_path
        self._session = session

    async def launch(self, model_ref: str) -> EngineProcess:
        """Start an engine for ``model_ref`` and return it once it is ready.

        Raises LaunchFailed (transient False for a missing model file, an
        unsupported reference or a missing program). Waits up to the spec's
        startup timeout; on failure or cancellation the process is ended.
        """
        model = self._check_model(model_ref)
        binary = self._binary()
        port = process.free_loopback_port()
        command = build_command(self._spec, binary, model, port)
        if binary is not None:
            version = await llama_server_version(binary)
            command = EngineCommand(command.argv, command.health_path, version, command.slots)
        offset = self._log_header(command)
        env = engine_env(self._spec.device_mask)
        try:
            proc = await process.spawn(command.argv, log_path=self._log_path, env=env)
        except OSError as exc:
            raise LaunchFailed(f"cannot start {command.argv[0]}: {exc}", transient=False) from exc
        engine = EngineProcess(proc, f"http://127.0.0.1:{port}", model_ref, command, offset)
        try:
            await self._await_ready(engine)
        except BaseException:
            engine.exited.cancel()
            await process.terminate(proc, grace_s=2.0)
            raise
        return engine

    def _check_model(self, model_ref: str) -> Path:
        try:
            path = resolve_model_ref(model_ref)
        except ValueError as exc:
            raise LaunchFailed(str(exc), transient=False, code=ErrorCode.INVALID_PARAMS) from exc
        problem = gguf_problem(path)
        if problem is not None:
            raise LaunchFailed(problem, transient=False, code=ErrorCode.INVALID_PARAMS)
        return path

    def _binary(self) -> str | None:
        configured = self._spec.server_binary
        if configured is None:
            return shutil.which("llama-server")
        found = shutil.which(configured)
        if found is None:
            why = f"server_binary {configured!r} not found or not executable"
            raise LaunchFailed(why, transient=False, code=ErrorCode.INVALID_PARAMS)
        return found

    def _log_header(self, command: EngineCommand) -> int:
        offset = process.log_size(self._log_path)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("a", encoding="utf-8") as fh:
            fh.write(f"--- llama-orch pool {self._spec.pool_id}: {' '.join(command.argv)}\n")
        return offset

    async def _await_ready(self, engine: EngineProcess) -> None:
        limit = self._spec.startup_timeout_s
        try:
            async with asyncio.timeout(limit):
                while not await self._healthy(engine):
                    if engine.exited.done():
                        raise self._exited_early(engine)
                    await asyncio.sleep(_POLL_S)
                await self._warm_up(engine)
        except TimeoutError as exc:
            raise LaunchFailed(f"engine not ready within {limit:g} s", transient=True) from exc

    async def _healthy(self, engine: EngineProcess) -> bool:
        timeout = aiohttp.ClientTimeout(total=max(self._spec.connect_timeout_s, 1.0))
        url = engine.base_url + engine.command.health_path
        try:
            async with self._session().get(url, timeout=timeout) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def _warm_up(self, engine: EngineProcess) -> None:
        body = {"model": engine.model_id, "prompt": _WARMUP_PROMPT, "stream": True}
        body.update(max_tokens=1, temperature=0.0)
        try:
            stream = await open_stream(
                self._session(),
                f"{engine.base_url}/v1/completions",
                body,
                decode_timeout_s=self._spec.startup_timeout_s,
                connect_timeout_s=self._spec.connect_timeout_s,
                name=f"engine of pool {self._spec.pool_id}",
            )
            async for _ in stream:
                pass
        except EngineError as exc:
            if engine.exited.done():
                raise self._exited_early(engine) from exc
            log.warning("pool %s: startup self-test failed: %s", self._spec.pool_id, exc.message)
            why = "the engine started but failed its first decode; see the pool's log"
            raise LaunchFailed(why, transient=True) from exc

    def _exited_early(self, engine: EngineProcess) -> LaunchFailed:
        tail = process.read_log_tail(self._log_path, since=engine.log_offset)
        pool, last = self._spec.pool_id, process.last_lines(tail)
        log.warning("pool %s: engine exited before ready; its last output: %s", pool, last)
        return LaunchFailed(load_failure_reason(engine.proc.returncode, tail), transient=True)
