"""Profile the orchestrator's per-token path (engine chunk -> SSE frame) under 64 streams,
or its per-request path (``--per-request``: many short requests, 64 at a time).

Starts a paced engine and ``llama-orch serve`` in front of it, warms up, then
samples the orchestrator only while 64 concurrent OrchQueue streams run:
with py-spy (``py-spy record --format raw``, CPU samples, idle excluded) when
it is installed, else with cProfile on a CPU-time clock switched on and off
by SIGUSR1 / SIGUSR2. Prints the functions with the most own CPU and the
share of each layer; the full listing goes to ``bench/out/profile.txt``.

``--per-request`` runs ``--total`` requests of 4 tokens, 64 at a time, on each
route in turn (OrchQueue's two-step form, the OpenAI route, the one-request
form), each sampled on its own (py-spy only, the thread holding the GIL: the
artifact store's fsync in a worker thread is not CPU), then the same requests straight
to the engine; it prints the orchestrator's CPU per request and the request
rate against direct, and writes each route's profile to
``bench/out/profile-per-request-<route>.txt``. ``--no-sample`` measures without
a sampler (the figures to compare before and after a change).

Run ``python -m bench.profile_hot_path [--streams 64] [--tokens 200] [--cprofile]`` or
``python -m bench.profile_hot_path --per-request [--total 2000] [--no-sample]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import client, procs, scenarios
from bench.stats import summarize

OUT = Path(__file__).resolve().parent / "out"
ORCHESTRATOR_FILES = frozenset(
    f"({p.name}:" for p in (Path(__file__).resolve().parents[1] / "app/orchestrator").glob("*.py")
)
"""How py-spy names the core's frames (a namespace package: the file name alone)."""
LAYERS = (
    ("app/api/", "app.api (HTTP, SSE writer)"),
    ("app/orchestrator/", "app.orchestrator (core)"),
    ("app/engine_host/", "app.engine_host (engine client)"),
    ("aiohttp/", "aiohttp"),
    ("asyncio/", "asyncio"),
    ("json/", "json"),
    ("logging/", "logging"),
    ("pydantic", "pydantic"),
    ("prometheus_client/", "prometheus_client"),
    ("pathlib.py", "pathlib (files)"),
)


def py_spy() -> str | None:
    """Return the py-spy executable next to this Python or on PATH, or None."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


# ---- the samplers -----------------------------------------------------------------


class PySpySampler:
    """``py-spy record`` attached to a running process, stopped with SIGINT."""

    def __init__(self, exe: str, pid: int, out: Path, *, gil: bool = False) -> None:
        self._cmd = [exe, "record", "-p", str(pid), "-r", "250", "-f", "raw", "-o", str(out)]
        self._cmd.append("--nonblocking")
        if gil:  # only the thread holding the GIL: Python's CPU, not threads in fsync
            self._cmd.append("--gil")
        self._out = out
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start sampling (returns at once)."""
        self._proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)

    def stop(self) -> str:
        """Stop sampling; returns the summary of the samples."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGINT)
        self._proc.wait(timeout=30)
        return summarize_collapsed(self._out.read_text())


class CProfileSampler:
    """cProfile inside the orchestrator (see ``serve_profiled``), toggled by signals."""

    def __init__(self, pid: int, out: Path) -> None:
        self._pid = pid
        self._out = out

    def start(self) -> None:
        """Switch the profiler on."""
        os.kill(self._pid, signal.SIGUSR1)

    def stop(self) -> str:
        """Switch it off, wait for the dump; returns its summary."""
        os.kill(self._pid, signal.SIGUSR2)
        for _ in range(100):
            if self._out.exists():
                break
            time.sleep(0.1)
        time.sleep(0.5)
        return summarize_pstats(self._out)


def serve_profiled(config: str, out: str) -> int:
    """Run ``llama-orch serve`` with a CPU-time cProfile toggled by SIGUSR1/SIGUSR2."""
    prof = cProfile.Profile(time.process_time)

    def stop(*_: Any) -> None:
        prof.disable()
        prof.dump_stats(out)

    signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
    signal.signal(signal.SIGUSR2, stop)
    from app.main import main as app_main

    return app_main(["serve", "--config", config])


# ---- summaries ----------------------------------------------------------------------


def _is_core(frame: str) -> bool:
    _, paren, where = frame.partition(" (")
    return bool(paren) and f"({where.split(':', 1)[0]}:" in ORCHESTRATOR_FILES


def _layer(frame: str) -> str:
    if _is_core(frame):
        return "app.orchestrator (core)"
    for marker, name in LAYERS:
        if marker in frame:
            return name
    return "other (event loop, sockets, builtins)"


def _strip_line(frame: str) -> str:
    """``f (path/x.py:12)`` -> ``f (parent/x.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({Path(path).parent.name}/{Path(path).name})"


def _innermost_app(raw_frames: list[str]) -> str:
    """Return the deepest frame of app code in a raw stack, or a placeholder without one."""
    for frame in reversed(raw_frames):
        if _is_core(frame) or (
            "(app/" in frame and "(app/main.py" not in frame and "(app/__main__.py" not in frame
        ):
            return _strip_line(frame)
    return "(no app frame: event loop, aiohttp, threads)"


def summarize_collapsed(text: str, top: int = 30) -> str:
    """Return own-time and per-layer shares of py-spy raw (collapsed) stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_strip_line(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        layers[_layer(stack.split(";")[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
        ours[_innermost_app(stack.split(";"))] += count
    lines = [f"{total} CPU samples", "", "own CPU by layer (the frame that was running):"]
    lines += [f"{n / total * 100:6.1f} %  {name}" for name, n in layers.most_common()]
    lines += ["", "CPU by the innermost app function (its own time and the libraries it called):"]
    lines += [f"{n / total * 100:6.1f} %  {name}" for name, n in ours.most_common(top)]
    lines += ["", "functions with the most own CPU:"]
    lines += [f"{n / total * 100:6.1f} %  {name}" for name, n in own.most_common(top)]
    lines += ["", "functions with the most inclusive CPU:"]
    lines += [f"{n / total * 100:6.1f} %  {name}" for name, n in inclusive.most_common(top + 20)]
    return "\n".join(lines)


def summarize_pstats(path: Path, top: int = 30) -> str:
    """Return own-time shares and per-layer shares of a cProfile dump."""
    raw: dict[Any, Any] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in raw.values()) or 1.0
    layers: Counter[str] = Counter()
    for (file, _line, _name), row in raw.items():
        layers[_layer(file)] += row[2]
    lines = [f"{total:.2f} CPU s profiled", "", "own CPU by layer:"]
    lines += [f"{v / total * 100:6.1f} %  {k}" for k, v in layers.most_common()]
    lines += ["", "functions with the most own CPU:"]
    ranked = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (file, line, name), row in ranked:
        lines.append(f"{row[2] / total * 100:6.1f} %  {row[1]:8d} calls  {name} ({file}:{line})")
    return "\n".join(lines)


# ---- the run -------------------------------------------------------------------------


def start_orchestrator(work: Path, cfg: procs.OrchConfig, use_cprofile: bool) -> procs.Child:
    """Start the orchestrator, under ``serve_profiled`` when ``use_cprofile``."""
    if not use_cprofile:
        return procs.start_orchestrator(work, cfg, name="profiled")
    port = procs.free_port()
    path = work / "profiled.toml"
    path.write_text(procs.config_text(cfg, port, work))
    log_path = work / "profiled.log"
    cmd = [sys.executable, "-m", "bench.profile_hot_path", "--serve", str(path)]
    cmd += ["--profile-out", str(work / "serve.prof")]
    env = dict(os.environ, XDG_STATE_HOME=str(work / "state"), XDG_DATA_HOME=str(work / "data"))
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    return procs.Child("profiled", proc, f"http://127.0.0.1:{port}", log_path)


async def drive(work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Run the profiled scenario; returns the client's figures and the profile summary."""
    exe = None if args.cprofile else py_spy()
    async with client.new_session() as http:
        engine = procs.start_paced_engine(work, gap_ms=scenarios.GAP_MS)
        try:
            await procs.wait_engine_ready(http, engine)
            cfg = procs.OrchConfig(engine.url)
            orch = start_orchestrator(work, cfg, use_cprofile=exe is None)
            try:
                await procs.wait_pool_ready(http, orch)
                fn = client.orchqueue_stream(orch.url)
                await client.run_concurrent(http, fn, args.streams, 4)
                sampler: Any = (
                    PySpySampler(exe, orch.pid, work / "spy.txt")
                    if exe
                    else CProfileSampler(orch.pid, work / "serve.prof")
                )
                sampler.start()
                cpu = orch.cpu()
                if args.total > args.streams:
                    results = await client.run_pool(http, fn, args.total, args.streams, args.tokens)
                else:
                    results = await client.run_concurrent(http, fn, args.streams, args.tokens)
                cpu = orch.cpu() - cpu
                text = sampler.stop()
            finally:
                orch.stop()
        finally:
            engine.stop()
    figures = summarize(results)
    figures["orch_cpu_s"] = cpu
    figures["sampler"] = "py-spy" if exe else "cProfile (CPU clock)"
    return figures, text


ROUTES = {
    "orchqueue": client.orchqueue_stream,
    "openai": lambda url: client.openai_stream(f"{url}/v1"),
    "oneshot": client.orchqueue_oneshot_stream,
}


async def _pool_run(
    http: Any, fn: client.StreamFn, args: argparse.Namespace, pid: int | None, engine_pid: int
) -> dict[str, Any]:
    """Run ``args.total`` short requests, ``args.streams`` at a time; returns their figures:
    the rate and the CPU per request of the orchestrator (``pid``, user and system), the
    engine and this client."""
    orch = procs.cpu_split(pid) if pid else (0.0, 0.0)
    engine, mine = procs.cpu_seconds(engine_pid), time.process_time()
    start = time.perf_counter()
    results = await client.run_pool(http, fn, args.total, args.streams, args.tokens)
    elapsed = time.perf_counter() - start
    n = max(1, len(results))
    user, system = (
        (b - a for a, b in zip(orch, procs.cpu_split(pid), strict=True)) if pid else (0.0, 0.0)
    )
    errors = [r.error for r in results if r.error is not None]
    return {
        "requests_per_s": len(results) / elapsed,
        "cpu_ms_per_request": (user + system) / n * 1000,
        "user_ms_per_request": user / n * 1000,
        "system_ms_per_request": system / n * 1000,
        "engine_ms_per_request": (procs.cpu_seconds(engine_pid) - engine) / n * 1000,
        "client_ms_per_request": (time.process_time() - mine) / n * 1000,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


async def drive_per_request(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run and sample each route of ``args.routes``, then direct; returns the figures.

    Writes each route's profile summary to ``bench/out/profile-per-request-<route>.txt``.
    """
    exe = None if args.no_sample else py_spy()
    out: dict[str, Any] = {"sampler": "py-spy" if exe else "none", "load": [os.getloadavg()]}
    async with client.new_session() as http:
        engine = procs.start_paced_engine(work, gap_ms=scenarios.GAP_MS)
        try:
            await procs.wait_engine_ready(http, engine)
            orch = procs.start_orchestrator(work, procs.OrchConfig(engine.url), name="profiled")
            try:
                await procs.wait_pool_ready(http, orch)
                for route in args.routes:
                    fn = ROUTES[route](orch.url)
                    await client.run_pool(http, fn, args.warmup, args.streams, args.tokens)
                    await asyncio.sleep(0.5)
                    raw = work / f"spy-{route}.txt"
                    spy = PySpySampler(exe, orch.pid, raw, gil=True) if exe else None
                    if spy:
                        spy.start()
                    out[route] = await _pool_run(http, fn, args, orch.pid, engine.pid)
                    if spy:
                        text = spy.stop()
                        (OUT / f"profile-per-request-{route}.txt").write_text(text + "\n")
                        shutil.copy(raw, OUT / f"spy-per-request-{route}.raw")
            finally:
                orch.stop()
            direct = client.openai_stream(engine.url)
            out["direct"] = await _pool_run(http, direct, args, None, engine.pid)
        finally:
            engine.stop()
    out["load"].append(os.getloadavg())
    return out


def per_request_report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    """Return the per-request figures as text lines."""
    d = figures["direct"]
    direct = d["requests_per_s"]
    load = " -> ".join(f"{a:.2f}" for a, _, _ in figures["load"])
    lines = [
        f"{args.total} requests of {args.tokens} tokens per route, {args.streams} at a time, "
        f"sampler {figures['sampler']}; 1-minute load average {load} on "
        f"{os.cpu_count()} cores; direct {direct:.0f} requests/s (engine "
        f"{d['engine_ms_per_request']:.3f} ms, client {d['client_ms_per_request']:.3f} ms "
        "CPU per request)",
    ]
    for route in args.routes:
        f = figures[route]
        lines.append(
            f"  {route:9s} {f['cpu_ms_per_request']:.3f} ms CPU per request (user "
            f"{f['user_ms_per_request']:.3f}, system {f['system_ms_per_request']:.3f}), "
            f"{f['requests_per_s']:.0f} requests/s (x{f['requests_per_s'] / direct:.2f} direct); "
            f"engine {f['engine_ms_per_request']:.3f} ms, client "
            f"{f['client_ms_per_request']:.3f} ms; "
            f"{f['errors']} errors{'' if not f['first_error'] else ': ' + f['first_error']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Profile once and print the summary. Returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m bench.profile_hot_path", description=__doc__)
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--total", type=int, default=0, help="streams in all (> --streams: a pool)")
    p.add_argument("--cprofile", action="store_true", help="use cProfile even if py-spy exists")
    p.add_argument("--per-request", action="store_true", help="profile short requests")
    p.add_argument("--routes", nargs="+", choices=sorted(ROUTES), default=list(ROUTES))
    p.add_argument("--warmup", type=int, default=200, help="requests per route before sampling")
    p.add_argument("--no-sample", action="store_true", help="measure without a sampler")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve_profiled(args.serve, args.profile_out)
    work = Path(tempfile.mkdtemp(prefix="llama-orch-profile-"))
    OUT.mkdir(exist_ok=True)
    if args.per_request:
        args.tokens = 4 if args.tokens == 200 else args.tokens
        args.total = args.total or 2000
        report = per_request_report(asyncio.run(drive_per_request(work, args)), args)
        shutil.rmtree(work, ignore_errors=True)
        print(report)
        return 0
    figures, text = asyncio.run(drive(work, args))
    tokens = max(1, figures["tokens"])
    head = (
        f"{max(args.total, args.streams)} streams ({args.streams} at a time) x {args.tokens} "
        f"tokens through OrchQueue SSE, sampled with "
        f"{figures['sampler']}: {figures['tokens']} tokens, {figures['errors']} errors, "
        f"{figures['tokens_per_s']:.0f} tokens/s; orchestrator CPU {figures['orch_cpu_s']:.2f} s "
        f"= {figures['orch_cpu_s'] / tokens * 1e6:.1f} us per token"
    )
    (OUT / "profile.txt").write_text(head + "\n\n" + text + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(head + "\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
