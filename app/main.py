"""Composition root: the CLI, and the one place that wires every layer.

``llama-orch [gui]`` opens the desktop app, ``serve`` runs headless (and never
imports Qt), ``gpus`` prints the NVML inventory, ``demo-model`` writes the
generated GGUF model, ``check-config`` validates a config file, ``ask`` streams
one answer from a running server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app.config import (
    ConfigError,
    PoolSettings,
    Settings,
    check_config_main,
    default_config_path,
    default_settings,
    load_settings,
    remove_stale_temporaries,
    save_settings,
)
from app.logs import REDACTOR, setup_logging
from app.models_wiring import add_model_commands, run_model_command

if TYPE_CHECKING:  # the layers are imported lazily, so `serve` never loads Qt
    from prometheus_client.registry import Collector

    from app.api.server import ApiServer
    from app.api.settings import ApiSettings
    from app.engine_host.gpu_poller import GpuPoller
    from app.engine_host.llamacpp import LlamaCppSpec
    from app.engine_host.llamacpp_stats import EngineStats
    from app.engine_host.model_store import ModelStore
    from app.gui_controls import GuiControls
    from app.orchestrator.artifacts_port import ArtifactRegistry
    from app.orchestrator.ports import EngineControl, GpuInventory
    from app.orchestrator.service import Orchestrator, OrchestratorConfig

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger("llama_orch.main")

FIRST_START_BANNER = (
    "You're running the demo model (a tiny generated model that writes nonsense). "
    "Get a real one with Get a model (search Hugging Face and download) or Pools → Set model…"
)


# ---- the backend: config -> engines -> core -> API --------------------------------


@dataclass
class Backend:
    """Everything ``serve`` and the GUI run: engines, core, API server, GPU poller."""

    settings: Settings
    orch: Orchestrator
    api: ApiServer
    poller: GpuPoller
    engines: list[EngineControl] = field(default_factory=list)
    models: ModelStore | None = None
    artifacts: ArtifactRegistry | None = None
    _fetching: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        """Start the GPU poller, the engines and the API server (and, with
        ``[models] auto_fetch``, the downloads of missing pool models). Raises on
        failure (UnsafeBind, OSError for a port in use) after stopping what started."""
        self.poller.start()
        await self.orch.start()
        try:
            await self.api.start()
        except BaseException:
            await self.orch.shutdown(deadline_s=0)
            self.poller.stop()
            raise
        if self.models is not None and self.settings.models.auto_fetch:
            from app.models_wiring import auto_fetch

            task = asyncio.create_task(auto_fetch(self.settings, self.models, self.orch))
            self._fetching.add(task)
            task.add_done_callback(self._fetching.discard)

    async def stop(self, deadline_s: float = 10.0, hurry: Callable[[], bool] | None = None) -> None:
        """Stop admitting, drain in-flight work until ``deadline_s``, close live
        streams, stop the engines (no orphans) and the poller. Once ``hurry()``
        turns true (polled every 0.1 s), the drain is cut short: tasks are
        cancelled and everything stops now."""
        graceful = asyncio.ensure_future(self._stop(deadline_s))
        while hurry is not None and not graceful.done():
            await asyncio.wait([graceful], timeout=0.1)
            if not graceful.done() and hurry():
                print("stopping now: cancelling tasks", file=sys.stderr, flush=True)
                graceful.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await graceful
                await self._stop(0.0)
                return
        await graceful

    async def _stop(self, deadline_s: float) -> None:
        if self.models is not None:
            await self.models.close()
        await self.orch.shutdown(deadline_s=deadline_s)
        await self.api.stop()
        await asyncio.to_thread(self.poller.stop)


def api_settings(settings: Settings) -> ApiSettings:
    """Return the app.api ApiSettings for ``settings``."""
    from app.api.connections import ConnectionLimits
    from app.api.settings import ApiSettings
    from app.orchestrator.loopback import host_key

    host, port = settings.bind_host_port()
    s = settings.server
    return ApiSettings(
        bind_host=host,
        bind_port=port,
        auth_token=settings.auth_token,
        auth_optional=s.auth_optional,
        trust_proxy_auth=s.trust_proxy_auth,
        cancel_on_disconnect=s.cancel_on_disconnect,
        sse_heartbeat_ms=s.sse_heartbeat_ms,
        sse_microbatch_ms=s.sse_microbatch_ms,
        cors_origins=tuple(s.cors_origins),
        allowed_hosts=tuple(host_key(h) for h in s.allowed_hosts),
        trusted_proxies=tuple(s.trusted_proxies),
        limits=ConnectionLimits(
            head_timeout_s=s.request_head_timeout_s,
            keepalive_s=s.keepalive_timeout_s,
            per_peer=s.max_connections_per_peer,
            total=s.max_connections,
        ),
    )


def orchestrator_config(settings: Settings) -> OrchestratorConfig:
    """Return the core's OrchestratorConfig for ``settings``."""
    from app.orchestrator.queues import FullPolicy
    from app.orchestrator.service import OrchestratorConfig
    from app.orchestrator.sessions import BudgetLimits

    ses = settings.sessions
    return OrchestratorConfig(
        queue_capacity=settings.admission.queue_capacity,
        full_policy=FullPolicy(settings.admission.full_policy),
        channel_cap=settings.server.sse_channel_cap,
        unopened_stream_timeout_s=float(settings.server.unopened_stream_timeout_s),
        session_ttl_s=float(ses.ttl_s),
        session_max_turns=ses.max_turns,
        budgets=BudgetLimits(
            tokens=ses.token_budget or None,
            time_ms=ses.time_budget_ms or None,
            cost=ses.cost_budget or None,
            cost_per_1k_tokens=ses.cost_per_1k_tokens,
        ),
    )


def build_engine(settings: Settings, pool: PoolSettings, log_dir: Path) -> EngineControl:
    """Return the EngineControl adapter for one ``[[pools]]`` entry."""
    if pool.engine == "mock":
        from app.engine_host.mock import MockEngine, MockSpec

        return MockEngine(
            MockSpec(
                pool_id=pool.id,
                model=pool.model or "mock",
                ctx=pool.ctx,
                slots=pool.slots,
                device_mask=pool.device_mask,
                tokens_per_s=pool.mock_tokens_per_s,
                first_token_ms=pool.mock_first_token_ms,
                fail_after_tokens=pool.mock_fail_after_tokens,
                crash_after_tokens=pool.mock_crash_after_tokens,
                hang_after_tokens=pool.mock_hang_after_tokens,
                start_delay_ms=pool.mock_start_delay_ms,
                decode_timeout_s=float(settings.engines.decode_timeout_s),
                demo=pool.demo,
            )
        )
    if pool.engine == "openai":
        from app.engine_host.openai_remote import OpenAIEngine, OpenAISpec

        REDACTOR.add(os.environ.get(pool.api_key_env) if pool.api_key_env else None)
        return OpenAIEngine(
            OpenAISpec(
                pool_id=pool.id,
                base_url=pool.base_url,
                model=pool.model,
                api_key_env=pool.api_key_env or None,
                ctx=pool.ctx,
                slots=pool.slots,
                device_mask=pool.device_mask,
                decode_timeout_s=float(settings.engines.decode_timeout_s),
                health_interval_s=settings.engines.health_interval_s,
                health_timeout_s=settings.engines.health_timeout_s,
            )
        )
    from app.engine_host.llamacpp import LlamaCppEngine
    from app.models_wiring import open_catalog, pool_model

    model, needs = pool_model(settings, pool, open_catalog())
    return LlamaCppEngine(
        llamacpp_spec(settings, pool, model, needs),
        log_dir=log_dir,
        gpu_indices=nvml_gpu_indices,
        gpu_snapshot=nvml_gpu_snapshot,
    )


def llamacpp_spec(
    settings: Settings, pool: PoolSettings, model: str | None, needs: str = ""
) -> LlamaCppSpec:
    """Return how to run ``pool``'s llama-server under ``settings`` (the one place it is built)."""
    from app.engine_host.llamacpp import LlamaCppSpec

    binary = settings.engines.llama_server or None
    return LlamaCppSpec(
        pool_id=pool.id,
        model_ref=model,
        needs_model_detail=needs,
        ctx=pool.ctx,
        slots=pool.slots,
        device_mask=pool.device_mask,
        server_binary=str(settings.resolve_path(binary)) if binary else None,
        demo=pool.demo,
        startup_timeout_s=float(settings.engines.startup_timeout_s),
        decode_timeout_s=float(settings.engines.decode_timeout_s),
        gpu_layers=pool.gpu_layers,
        flash_attn=pool.flash_attn,
        cache_type_k=pool.cache_type_k,
        cache_type_v=pool.cache_type_v,
        tensor_split=tuple(pool.tensor_split),
        extra_args=tuple(pool.extra_args),
        health_interval_s=settings.engines.health_interval_s,
        health_timeout_s=settings.engines.health_timeout_s,
    )


def engine_metrics(engines: Sequence[EngineControl]) -> Collector:
    """Return the collector that re-exports llama-server pools' own metrics with pool labels."""
    from app.engine_host.llamacpp import LlamaCppEngine
    from app.engine_host.llamacpp_stats import EngineMetrics

    def sources() -> list[tuple[dict[str, str], EngineStats]]:
        return [
            ({"pool_id": e.descriptor.pool_id, "engine": "llamacpp"}, e.stats)
            for e in engines
            if isinstance(e, LlamaCppEngine)
        ]

    return EngineMetrics(sources)


def nvml_gpu_indices() -> list[int]:
    """Return the indices of the GPUs NVML sees now (empty without NVML). Blocks on NVML."""
    from app.engine_host.nvml import NvmlInventory

    reader = NvmlInventory()
    try:
        return [gpu.index for gpu in reader.read(with_processes=False).gpus]
    finally:
        reader.close()


def nvml_gpu_snapshot() -> GpuInventory:
    """Return NVML's view of the GPUs' memory now (empty without NVML). Blocks on NVML."""
    from app.engine_host.nvml import NvmlInventory

    reader = NvmlInventory()
    try:
        return reader.read(with_processes=False)
    finally:
        reader.close()


def build_backend(settings: Settings, *, loop: asyncio.AbstractEventLoop | None = None) -> Backend:
    """Wire engines, core and API server for ``settings`` (nothing started yet)."""
    from app.api.server import ApiServer
    from app.engine_host.artifacts import ArtifactStore
    from app.engine_host.catalog import default_catalog_dir
    from app.engine_host.gpu_poller import GpuPoller
    from app.engine_host.nvml import NvmlInventory
    from app.models_wiring import build_model_store
    from app.orchestrator.service import Orchestrator

    loop = loop or asyncio.get_running_loop()
    log_dir = settings.log_dir_path()
    engines = [build_engine(settings, p, log_dir) for p in settings.pools]

    def engine_pids() -> list[int]:
        return [pid for e in engines if (pid := getattr(e, "engine_pid", None))]

    poller = GpuPoller(NvmlInventory(engine_pids=engine_pids), dispatch=loop.call_soon_threadsafe)
    orch = Orchestrator(engines, orchestrator_config(settings), gpu_probe=poller)
    orch.metrics.registry.register(engine_metrics(engines))
    models = build_model_store(settings, orch)
    artifacts = ArtifactStore(default_catalog_dir() / "artifacts")
    api = ApiServer(orch, api_settings(settings), models=models, artifacts=artifacts)
    REDACTOR.add(settings.auth_token)
    REDACTOR.add(os.environ.get("HF_TOKEN"))
    return Backend(
        settings=settings,
        orch=orch,
        api=api,
        poller=poller,
        engines=engines,
        models=models,
        artifacts=artifacts,
    )


# ---- configuration on first start ------------------------------------------------------


def load_or_create_settings(path: Path, env: dict[str, str] | None = None) -> tuple[Settings, bool]:
    """Load ``path``; when it does not exist, write the default config (one pool
    per GPU found plus the demo pool) and return it with ``True``. Raises
    ConfigError. Blocks (disk, NVML). Temporaries of a killed save are removed first."""
    env = dict(os.environ) if env is None else env
    for stale in remove_stale_temporaries(path):
        log.info("removed %s, left by an interrupted config save", stale)
    if path.exists():
        return load_settings(path, env), False
    from app.engine_host.demo_model import default_demo_model_path, ensure_demo_model
    from app.engine_host.nvml import NvmlInventory

    inventory = NvmlInventory().read(with_processes=False)
    demo = ensure_demo_model(default_demo_model_path())
    defaults = default_settings([g.index for g in inventory.gpus], demo)
    save_settings(defaults, path)
    log.info("wrote the default config to %s", path)
    return load_settings(path, env), True


# ---- commands ---------------------------------------------------------------------------


def cmd_serve(config: Path, bind: str | None) -> int:
    """Run the orchestrator headless until SIGTERM/SIGINT. Returns the exit code."""
    try:
        settings, _ = load_or_create_settings(config)
        warnings = settings.warnings
        if bind:
            settings = settings.with_bind(bind)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    setup_logging(settings.log_dir_path() / "llama-orch.log")
    for warning in warnings:
        log.warning("%s", warning)
    from app.api.connections import raise_open_file_limit

    raise_open_file_limit()
    with asyncio.Runner(loop_factory=backend_loop_factory()) as runner:
        return runner.run(_serve(settings))


def backend_loop_factory(
    env: Mapping[str, str] | None = None,
) -> Callable[[], asyncio.AbstractEventLoop]:
    """Return the factory of the backend's event loop: asyncio's, or uvloop's with
    ``LLAMA_ORCH_LOOP=uvloop`` when it is installed (opt-in: it did not measure
    clearly faster here and reports failed accepts differently, see bench/PROFILE.md)."""
    env = os.environ if env is None else env
    if env.get("LLAMA_ORCH_LOOP", "").strip().lower() == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


async def _serve(settings: Settings) -> int:
    from app.api.settings import UnsafeBind

    backend = build_backend(settings)
    stop = asyncio.Event()
    signals = [0]  # the second SIGINT/SIGTERM stops at once

    def on_signal() -> None:
        signals[0] += 1
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await backend.start()
    except UnsafeBind as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        await backend.stop(deadline_s=0)
        return 1
    print(f"llama-orch serving on {backend.api.url}", file=sys.stderr, flush=True)
    await stop.wait()
    print(
        "shutting down: finishing in-flight tasks (Ctrl-C again to stop now)",
        file=sys.stderr,
        flush=True,
    )
    await backend.stop(hurry=lambda: signals[0] > 1)
    return 0


def _add_gui_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--minimized", action="store_true", help="start in the tray (used at login)")
    sp.add_argument("--connect", metavar="URL", help="watch the llama-orch server at URL")
    sp.add_argument("--token-file", metavar="FILE", help="file holding that server's token")


def cmd_gui(config: Path, *, minimized: bool = False) -> int:
    """Open the desktop app. Returns the exit code: 1 when the window cannot open
    here (missing system libraries), 2 for a config problem (shown in a dialog)."""
    from app.desktop.preflight import preflight

    problem = preflight()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    try:
        settings, first = load_or_create_settings(config)
    except ConfigError as exc:
        return _start_failed(f"The config file {config} has problems:\n{exc}", 2)
    log_file = settings.log_dir_path() / "llama-orch.log"
    setup_logging(log_file)
    from app.gui_connect import ask_to_connect, cmd_gui_connect, offer_question, running_server

    running = running_server(*settings.bind_host_port())
    if running and ask_to_connect(offer_question(running)):
        return cmd_gui_connect(running, settings.auth_token, minimized=minimized)
    from app.api.connections import raise_open_file_limit
    from app.gui_controls import GuiControls

    raise_open_file_limit()
    from app.ui.app import run_gui

    async def start() -> tuple[Orchestrator, GuiControls, Callable[[], Awaitable[None]]]:
        backend = build_backend(settings)
        try:
            await backend.start()
        except OSError as exc:
            raise RuntimeError(bind_failure(settings.server.bind, config, exc)) from None
        controls = GuiControls(backend, config, log_file, api_settings)
        return backend.orch, controls, lambda: backend.stop(hurry=hurry.is_set)

    hurry = threading.Event()  # set by a second SIGINT/SIGTERM, read by the backend's stop
    banner = FIRST_START_BANNER if first else _demo_banner(settings)
    return run_gui(
        start,
        banner=banner,
        minimized=minimized,
        backend_loop=backend_loop_factory(),
        on_repeat_signal=hurry.set,
    )


def bind_failure(bind: str, config: Path, exc: OSError) -> str:
    """Return the sentence for an API server that cannot listen on ``bind``. Pure."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"Another program already listens on {bind} (perhaps `llama-orch serve` or its "
            f"user service): quit it, or set another port in [server] bind in {config}."
        )
    reason = exc.strerror or str(exc)
    return f"The API server cannot listen on {bind} ({reason}); change [server] bind in {config}."


def _start_failed(message: str, code: int) -> int:
    """Show why the window cannot start (stderr and a dialog); return ``code``."""
    from app.ui.start_error import report_start_error

    report_start_error(message)
    return code


def _demo_banner(settings: Settings) -> str | None:
    only_demo = all(p.demo or not p.model for p in settings.pools)
    return FIRST_START_BANNER if only_demo else None


def cmd_gpus(as_json: bool) -> int:
    """Print the NVML inventory (or the no-GPU hint). Returns 0."""
    from app.engine_host.nvml import NvmlInventory, format_inventory, inventory_to_json

    inv = NvmlInventory().read()
    if as_json:
        print(json.dumps(inventory_to_json(inv), indent=2))
    else:
        print(format_inventory(inv))
    return 0


def cmd_demo_model(path: str) -> int:
    """Write the generated demo GGUF model to ``path``. Returns 0, or 1 on an OS error."""
    from app.engine_host.demo_model import write_demo_model

    try:
        out = write_demo_model(Path(path))
    except OSError as exc:
        print(f"cannot write the demo model to {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


ASK_EPILOG = """\
The server is --url, else LLAMA_ORCH_URL, else http://127.0.0.1:8080. The bearer
token is read from --token-file, else from AUTH_TOKEN.

exit codes:
  0    the answer was streamed to the end
  1    server or connection error (the task failed, the server is unreachable)
  2    usage error or invalid parameters (the server answered 400)
  3    authentication refused (401/403): check --token-file or AUTH_TOKEN
  4    rejected: the queue stayed full (429) after the --retry attempts
  5    no pool can take the task now (503: unavailable, loading or shutting down)
  130  interrupted with Ctrl-C (the task was canceled on the server)"""


def _add_ask_parser(sub: SubParsers) -> None:
    ap = sub.add_parser(
        "ask",
        help="ask a running server; stream the answer to stdout",
        description="Submit one task to a llama-orch server and stream the answer: tokens\n"
        "on stdout; queue position, errors and a summary (pool, TTFT, tokens/s) on\n"
        "stderr. Ctrl-C cancels the task on the server.",
        epilog=ASK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("prompt", metavar="PROMPT", help="the prompt, or - to read it from stdin")
    ap.add_argument("--url", default=None, help="server base URL (default: LLAMA_ORCH_URL)")
    ap.add_argument("--token-file", default=None, help="file holding the bearer token")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--pool", default=None, metavar="ID", help="run on this pool only")
    where.add_argument("--prefer", default=None, metavar="ID,...", help="prefer these pools")
    ap.add_argument("--priority", choices=("interactive", "batch"), default="interactive")
    ap.add_argument("--seed", type=int, default=None, metavar="N")
    ap.add_argument("--max-tokens", type=int, default=None, metavar="N")
    ap.add_argument(
        "--retry", type=int, default=0, metavar="N", help="retries after 429 queue full"
    )
    ap.add_argument(
        "--raw", action="store_true", help="send PROMPT as a plain prompt, not a chat message"
    )


def cmd_ask(args: argparse.Namespace) -> int:
    """Run ``llama-orch ask``. Returns the exit code (see ASK_EPILOG)."""
    from app.ask import main as ask_main

    return ask_main(args)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Return the parsed command line (``gui`` when no command is given)."""
    p = argparse.ArgumentParser(
        prog="llama-orch", description="A home-lab LLM orchestrator with GPU-aware placement."
    )
    p.add_argument("--version", action="store_true", help="print the versions and exit")
    sub = p.add_subparsers(dest="command")
    for name in ("gui", "serve"):
        what = "desktop app" if name == "gui" else "headless server"
        sp = sub.add_parser(name, help=f"run the {what}")
        sp.add_argument("--config", type=Path, default=None, help="config file (TOML)")
        if name == "serve":
            sp.add_argument("--bind", default=None, help="HOST:PORT to serve on")
        else:
            _add_gui_options(sp)
    ip = sub.add_parser("install-desktop", help="add llama-orch to your desktop's menu (no root)")
    ip.add_argument("--uninstall", action="store_true", help="remove every file it installed")
    ip.add_argument("--autostart", action="store_true", help="also start it at login")
    ip.add_argument("--config", type=Path, default=None, help="config file the service uses")
    gp = sub.add_parser("gpus", help="print the NVML GPU inventory")
    gp.add_argument("--json", action="store_true")
    dm = sub.add_parser("demo-model", help="write the small generated GGUF model")
    dm.add_argument("path")
    cc = sub.add_parser("check-config", help="validate a config file (exit 2 on problems)")
    cc.add_argument("path")
    _add_ask_parser(sub)
    add_model_commands(sub)
    p.add_argument("--config", type=Path, default=None, help="config file (TOML)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llama-orch`` console script. Returns the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = args.command or "gui"
    config = getattr(args, "config", None) or default_config_path()
    if args.version:
        from app.desktop.cli import cmd_version

        return cmd_version()
    if command == "install-desktop":
        from app.desktop.cli import cmd_install_desktop

        return cmd_install_desktop(
            config.expanduser().absolute(), uninstall=args.uninstall, autostart=args.autostart
        )
    if command == "serve":
        return cmd_serve(config, args.bind)
    if command == "gpus":
        return cmd_gpus(args.json)
    if command == "demo-model":
        return cmd_demo_model(args.path)
    if command == "check-config":
        return check_config_main(args.path)
    if command == "ask":
        return cmd_ask(args)
    if command in ("pull", "models", "rm"):
        return run_model_command(command, args, config)
    if getattr(args, "connect", None):
        return cmd_connect(args.connect, args.token_file, minimized=args.minimized)
    return cmd_gui(config, minimized=getattr(args, "minimized", False))


def cmd_connect(url: str, token_file: str | None, *, minimized: bool) -> int:
    """``gui --connect URL``: the window watches a running server. Returns the exit code."""
    from app.desktop.preflight import preflight
    from app.gui_connect import cmd_gui_connect, connect_token

    problem = preflight()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    if not url.startswith(("http://", "https://")):
        return _start_failed(f"--connect needs an http:// or https:// URL, got {url!r}.", 2)
    try:
        token = connect_token(token_file)
    except ValueError as exc:
        return _start_failed(f"Cannot watch {url}: {exc}.", 2)
    return cmd_gui_connect(url.rstrip("/"), token, minimized=minimized)


if __name__ == "__main__":
    raise SystemExit(main())
