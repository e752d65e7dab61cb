"""GUI scenario: the offscreen window under 1,000 and 5,000 tokens/s, with an API client.

Runs in its own process (``QT_QPA_PLATFORM=offscreen``): the real backend
(core, API server, an ``openai`` pool on a paced engine) runs on its own thread
and loop and the real ``MainWindow`` on the Qt thread's qasync loop, as in the app. For each
rate, chat conversations (one stream each, 50 tokens/s per stream) stream at
once while a separate process streams through the HTTP API. Measured over a
window in the middle of the streams: the Qt thread's CPU share
(``time.thread_time``), the backend thread's, the backend loop's lag p99 (a
probe sleeping 5 ms), and the API client's inter-token gap p99. The same load
read by plain coroutines on the backend loop, with no window attached, gives the
baseline for the backend figures.

``run_isolated`` starts the scenario and returns its figures, or why it was
not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import client, procs
from bench.stats import percentile, summarize

UI = Path(__file__).resolve().parent.parent / "app" / "ui"
GAP_MS = 20.0
PROBE_S = 0.005
API_STREAMS = 4


@dataclass(frozen=True)
class Plan:
    """Rates to run and the timing of each measurement."""

    rates: tuple[int, ...] = (1000, 5000)
    tokens: int = 300
    ramp_s: float = 1.5
    window_s: float = 3.0

    @classmethod
    def quick(cls) -> Plan:
        """Return a shorter plan for smoke runs."""
        return cls(rates=(1000, 5000), tokens=150, ramp_s=1.0, window_s=1.0)


def run_isolated(work: Path, *, quick: bool, timeout_s: float = 300.0) -> dict[str, Any] | str:
    """Run the scenario in a child process; returns its figures or why it was not measured.

    Blocks until the child ends (at most ``timeout_s``).
    """
    missing = [
        n for n in ("main_window.py", "chat_panel.py", "tasks_view.py") if not (UI / n).exists()
    ]
    if missing:
        return f"not measured yet: app/ui/{missing[0]} does not exist"
    cmd = [sys.executable, "-m", "bench.gui_bench", "--work", str(work)]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    env["XDG_DATA_HOME"] = str(work / "data")  # the traces of its streams stay in work
    try:
        done = subprocess.run(
            cmd + (["--quick"] if quick else []),
            capture_output=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"not measured: the GUI scenario did not finish within {timeout_s:g} s"
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        err = done.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
        why = next((line for line in reversed(err) if "Error" in line), err[-1])
        return f"not measured: the GUI scenario failed ({why.strip()[:200]})"
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


# ---- inside the GUI process ---------------------------------------------------------------


class LagProbe:
    """Sleeps 5 ms again and again on the loop, recording how late each wake-up was."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start probing (records from now on)."""
        self.lags_ms = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        clock = time.perf_counter
        while True:
            before = clock()
            await asyncio.sleep(PROBE_S)
            self.lags_ms.append((clock() - before - PROBE_S) * 1000)

    def stop(self) -> float:
        """Stop probing; returns the lag p99 in ms."""
        if self._task is not None:
            self._task.cancel()
        return percentile(self.lags_ms, 0.99)


async def measure(backend: Any, plan: Plan, api_url: str) -> dict[str, Any]:
    """Measure once streams run: the Qt thread's and the backend thread's CPU share, the
    backend loop's lag, the token rate and the API client's gaps."""
    api = _api_client(api_url, plan.ramp_s + plan.window_s + 1.0)
    await asyncio.sleep(plan.ramp_s)
    probe = LagProbe()
    await on_backend(backend, _start_probe(probe))
    before = await on_backend(backend, _reading(backend.orch))
    qt_cpu0, wall0 = time.thread_time(), time.perf_counter()
    await asyncio.sleep(plan.window_s)
    after = await on_backend(backend, _reading(backend.orch))
    qt_cpu1, wall1 = time.thread_time(), time.perf_counter()
    lag = await on_backend(backend, _stop_probe(probe))
    out, _ = await asyncio.get_running_loop().run_in_executor(None, api.communicate)
    api_figures = json.loads(out.decode() or "{}")
    wall = wall1 - wall0
    return {
        "tokens_per_s": (after[0] - before[0]) / wall,
        "gui_thread_cpu_share": (qt_cpu1 - qt_cpu0) / wall,
        "backend_thread_cpu_share": (after[1] - before[1]) / wall,
        "loop_lag_p99_ms": lag,
        "loop_lag_samples": len(probe.lags_ms),
        "api_gap_p99_ms": api_figures.get("gap_p99_ms"),
        "api_errors": api_figures.get("errors"),
    }


async def on_backend(backend: Any, coro: Any) -> Any:
    """Run ``coro`` on the backend thread's loop; return its result."""
    return await asyncio.wrap_future(backend.thread.call(coro))


async def _reading(orch: Any) -> tuple[int, float]:
    return sum(orch.tokens_out_by_pool().values()), time.thread_time()


async def _start_probe(probe: LagProbe) -> None:
    probe.start()


async def _stop_probe(probe: LagProbe) -> float:
    return probe.stop()


def _api_client(url: str, seconds: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bench.gui_bench", "--api-client", url, "--seconds", f"{seconds}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE)


async def headless_round(backend: Any, plan: Plan, streams: int, api_url: str) -> dict[str, Any]:
    """The baseline: the same streams read by plain coroutines on the backend loop."""
    from app.orchestrator.contracts import TaskRequest

    orch = backend.orch

    async def consume() -> None:
        resp = orch.submit(TaskRequest(prompt=client.PROMPT, max_tokens=plan.tokens))
        async for _event in orch.stream(str(resp.task_id)):
            pass

    async def consume_all() -> None:
        await asyncio.gather(*(consume() for _ in range(streams)))

    running = asyncio.ensure_future(on_backend(backend, consume_all()))
    figures = await measure(backend, plan, api_url)
    await running
    return figures


async def gui_round(
    window: Any, backend: Any, plan: Plan, streams: int, api_url: str
) -> dict[str, Any]:
    """Conversations of the chat panel stream at once; returns the window's figures."""
    chat = window.chat
    convs = [chat.current()] + [chat.new_conversation() for _ in range(streams - 1)]
    chat.tabs.setCurrentIndex(0)
    for conv in convs:
        conv.prompt.setPlainText(client.PROMPT)
        conv.max_tokens.setValue(plan.tokens)
        conv.send()
    figures = await measure(backend, plan, api_url)
    for _ in range(600):  # the streams end a few seconds after the window
        if not any(c.busy for c in convs):
            break
        await asyncio.sleep(0.1)
    for index in reversed(range(1, chat.tabs.count())):
        chat.close_conversation(index)
    return figures


async def scenario(work: Path, plan: Plan) -> dict[str, Any]:
    """Start the backend (its own thread) and the window, run every rate; returns the figures."""
    from PySide6.QtCore import QSettings

    from app.config import load_settings
    from app.gui_controls import GuiControls
    from app.main import api_settings, build_backend
    from app.ui.backend_thread import BackendThread
    from app.ui.embedded_bridge import EmbeddedBridge
    from app.ui.main_window import MainWindow

    engine = procs.start_paced_engine(work, gap_ms=GAP_MS, tokens=plan.tokens, name="gui-engine")
    try:
        async with client.new_session() as http:
            await procs.wait_engine_ready(http, engine)
        path = work / "gui.toml"
        cfg = procs.OrchConfig(engine.url, queue_capacity=1024)
        path.write_text(procs.config_text(cfg, procs.free_port(), work))
        settings = load_settings(path, {"HOME": str(work)})

        async def start() -> Any:
            backend = build_backend(settings)
            await backend.start()
            await _until_ready(backend.orch)
            controls = GuiControls(backend, path, work / "gui.log", api_settings)
            return (backend, controls), lambda: backend.stop(deadline_s=2)

        thread: BackendThread[Any] = BackendThread(start)
        backend, controls = await asyncio.to_thread(thread.start)
        backend.thread = thread
        try:
            bridge = EmbeddedBridge(backend.orch, controls, thread)
            qsettings = QSettings(str(work / "qt.ini"), QSettings.Format.IniFormat)
            window = MainWindow(bridge, settings=qsettings, tray_available=lambda: False)
            window.show()
            window.tabs.setCurrentWidget(window.chat)
            rates: dict[str, Any] = {}
            url = backend.api.url
            for rate in plan.rates:
                streams = max(1, round(rate * GAP_MS / 1000))
                base = await headless_round(backend, plan, streams, url)
                gui = await gui_round(window, backend, plan, streams, url)
                gui["baseline_cpu_share"] = base["backend_thread_cpu_share"]
                gui["baseline_loop_lag_p99_ms"] = base["loop_lag_p99_ms"]
                gui["baseline_api_gap_p99_ms"] = base["api_gap_p99_ms"]
                gui["widgets_cpu_share"] = gui["gui_thread_cpu_share"]
                gui["streams"] = streams
                rates[str(rate)] = gui
            window.hide()
            bridge.close()
        finally:
            await asyncio.to_thread(thread.stop)
    finally:
        engine.stop()
    return {"rates": rates, "api_streams": API_STREAMS, "plan": plan.__dict__}


async def _until_ready(orch: Any) -> None:
    for _ in range(600):
        if all(p.ready for p in orch.pool_views()):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the paced pool did not become ready within 30 s")


def gui_main(work: Path, plan: Plan) -> dict[str, Any]:
    """Run ``scenario`` on a qasync loop under an offscreen QApplication."""
    import qasync
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    try:
        figures: dict[str, Any] = loop.run_until_complete(scenario(work, plan))
        return figures
    finally:
        loop.close()


async def api_client(url: str, seconds: float) -> dict[str, Any]:
    """Stream through the OrchQueue API, ``API_STREAMS`` at a time, for ``seconds``."""
    fn = client.orchqueue_stream(url)
    results: list[client.StreamResult] = []
    end = time.perf_counter() + seconds

    async def worker(http: Any) -> None:
        while time.perf_counter() < end:
            results.append(await fn(http, 50))

    async with client.new_session() as http:
        await asyncio.gather(*(worker(http) for _ in range(API_STREAMS)))
    figures = summarize(results)
    return {"gap_p99_ms": figures["gap_p99_ms"], "errors": figures["errors"]}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of the child processes. Prints one JSON line of figures."""
    p = argparse.ArgumentParser(prog="python -m bench.gui_bench")
    p.add_argument("--work", type=Path)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--api-client")
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args(argv)
    if args.api_client:
        figures = asyncio.run(api_client(args.api_client, args.seconds))
    else:
        work = args.work or Path(os.environ.get("TMPDIR", "/tmp"))
        figures = gui_main(work, Plan.quick() if args.quick else Plan())
    print(json.dumps(figures), flush=True)
    if not args.api_client:
        os._exit(0)  # skip interpreter teardown: Qt objects may outlive the loop
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
