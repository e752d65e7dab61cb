"""``python -m bench`` (``make bench``): every scenario, then the results table.

Writes the raw figures to ``bench/out/results.json`` and the table of ratios
and overheads against the goals to ``bench/RESULTS.md``, and prints the table.
It first waits (``--quiet-wait``, 120 s at most) for the machine to be quiet.
``--quick`` runs smaller scenarios for a smoke test, and ``--engine llamacpp``
runs scenario 1 against llama.cpp on the demo model; both write their files
under ``bench/out/`` so the committed RESULTS.md keeps the figures of a full run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from bench import (
    client,
    engines_bench,
    gui_bench,
    machine,
    peers,
    placement_bench,
    procs,
    report,
    scenarios,
)
from bench.scenarios import Rig, Sizes

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SCENARIO_TIMEOUT_S = 300.0


def machine_info() -> dict[str, Any]:
    """Return the machine and software the figures were measured on, with the date."""
    info = machine.describe()
    info["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["gap_ms"] = scenarios.GAP_MS
    return info


def say(text: str) -> None:
    """Print a progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


CONTENTION: dict[str, dict[str, float]] = {}


async def timed(label: str, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Await one scenario under the scenario time limit; returns its figures.

    Records how busy other processes kept the machine meanwhile in CONTENTION.
    """
    say(f"{label} ...")
    meter = machine.Meter.start()
    async with asyncio.timeout(SCENARIO_TIMEOUT_S):
        figures = await work
    CONTENTION[label] = seen = meter.read()
    say(
        f"{label} done in {seen['seconds']:.1f} s "
        f"(other processes used {seen['others_cpu_share'] * 100:.0f}% of the machine)"
    )
    return figures


async def api_scenarios(
    rig: Rig, api: str, sizes: Sizes, through: client.StreamFn | None = None
) -> dict[str, Any]:
    """Scenarios 1 and 2 through one of the orchestrator's APIs (or a peer's ``through``)."""
    if through is None:
        through = rig.orchqueue if api == "orchqueue" else rig.openai
    out: dict[str, Any] = {
        "single": await timed(f"{api}: one stream", scenarios.single_stream(rig, through, sizes))
    }
    out["concurrent"] = {}
    for streams in (64, 256):
        work = scenarios.concurrent(rig, through, streams, sizes)
        out["concurrent"][str(streams)] = await timed(f"{api}: {streams} streams", work)
    return out


async def main_rig_scenarios(work: Path, sizes: Sizes) -> dict[str, Any]:
    """Scenarios 1-3 against one paced engine and one orchestrator in front of it."""
    figures: dict[str, Any] = {}
    async with client.new_session() as http:
        rig = await scenarios.start_rig(work, http, {"name": "main"})
        try:
            figures["orchqueue"] = await api_scenarios(rig, "orchqueue", sizes)
            if await scenarios.openai_served(rig):
                figures["openai"] = await api_scenarios(rig, "openai", sizes)
            else:
                figures["openai"] = report.NOT_SERVED
                say(report.NOT_SERVED)
            figures["memory"] = await timed("memory churn", scenarios.memory_churn(rig, sizes))
            figures["peers"] = await peer_scenarios(rig, work, sizes)
        finally:
            scenarios.stop_rig(rig)
        figures["admission"] = await timed(
            "admission burst", scenarios.admission_burst(http, work, sizes)
        )
    return figures


async def peer_scenarios(rig: Rig, work: Path, sizes: Sizes) -> dict[str, Any]:
    """Scenarios 1 and 2 through the bare relay and LiteLLM's proxy, on the same engine."""
    out: dict[str, Any] = {}
    binary = await asyncio.to_thread(peers.litellm_binary)
    starters: dict[str, Any] = {"relay": lambda: peers.start_relay(work, rig.engine.url)}
    if isinstance(binary, str):
        out["litellm"] = binary
        say(binary)
    else:
        starters["litellm"] = lambda: peers.start_litellm(work, rig.engine.url, binary)
    for name, start in starters.items():
        child = start()
        try:
            await procs.wait_engine_ready(rig.http, child)
            peer = Rig(rig.http, rig.engine, child)
            out[name] = await api_scenarios(peer, name, sizes, client.openai_stream(child.url))
        except (RuntimeError, TimeoutError) as exc:
            out[name] = f"not measured: {str(exc).splitlines()[0][:200]}"
            say(out[name])
        finally:
            child.stop()
    return out


async def real_engine_scenarios(work: Path, sizes: Sizes) -> dict[str, Any]:
    """Scenario 1 against llama.cpp on the demo model (one request at a time)."""
    figures: dict[str, Any] = {}
    async with client.new_session() as http:
        rig = await scenarios.start_rig(work, http, {"name": "real", "engine": "llamacpp"})
        try:
            for api in ("orchqueue", "openai"):
                if api == "openai" and not await scenarios.openai_served(rig):
                    figures[api] = report.NOT_SERVED
                    continue
                through = rig.orchqueue if api == "orchqueue" else rig.openai
                work_1 = scenarios.single_stream(rig, through, sizes)
                figures[api] = {"single": await timed(f"{api}: one stream (llama.cpp)", work_1)}
        finally:
            scenarios.stop_rig(rig)
    return figures


async def _placement(quick: bool) -> dict[str, Any]:
    return placement_bench.run(2_000 if quick else placement_bench.ITERATIONS)


async def _gui(work: Path, quick: bool) -> dict[str, Any] | str:
    """Run the GUI scenario in its own process; returns its figures or why it was not run."""

    async def run() -> dict[str, Any]:
        figures = await asyncio.to_thread(gui_bench.run_isolated, work, quick=quick)
        return figures if isinstance(figures, dict) else {"not_measured": figures}

    figures = await timed("GUI (offscreen)", run())
    why = figures.get("not_measured")
    return str(why) if why is not None else figures


def clean(value: Any) -> Any:
    """Return ``value`` with NaN replaced by None, for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


async def all_scenarios(
    work: Path, sizes: Sizes, *, quick: bool, gui: bool, engine: str
) -> dict[str, Any]:
    """Run the scenarios of ``engine``; returns their figures."""
    if engine == "llamacpp":
        return await real_engine_scenarios(work, sizes)
    figures = await main_rig_scenarios(work, sizes)
    figures["placement"] = await timed("placement decide", _placement(quick))
    figures["engines"] = await timed("llama-server vs llama-cpp-python", engines_bench.run(work))
    figures["gui"] = await _gui(work, quick) if gui else "not measured: skipped (--no-gui)"
    return figures


def run(sizes: Sizes, *, quick: bool, gui: bool, engine: str = "paced") -> dict[str, Any]:
    """Run every scenario; returns the raw figures. Blocks for a few minutes."""
    figures: dict[str, Any] = {"machine": machine_info(), "sizes": sizes.__dict__, "quick": quick}
    figures["engine"] = engine
    work = Path(tempfile.mkdtemp(prefix="llama-orch-bench-"))
    try:
        scenario_figures = all_scenarios(work, sizes, quick=quick, gui=gui, engine=engine)
        figures.update(asyncio.run(scenario_figures))
    except BaseException:
        say(f"failed; process logs kept in {work}")
        raise
    figures["contention"] = CONTENTION
    shutil.rmtree(work, ignore_errors=True)
    return figures


def write(figures: dict[str, Any], *, quick: bool) -> str:
    """Write results.json and RESULTS.md; returns the markdown.

    Only a full run on the paced engine replaces the committed bench/RESULTS.md;
    other runs write theirs under bench/out/.
    """
    OUT.mkdir(exist_ok=True)
    suffix = "" if figures["engine"] == "paced" else f"-{figures['engine']}"
    (OUT / f"results{suffix}.json").write_text(json.dumps(clean(figures), indent=2) + "\n")
    text = report.markdown(figures)
    committed = not quick and not suffix
    (HERE if committed else OUT).joinpath(f"RESULTS{suffix}.md").write_text(text)
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the command line of ``python -m bench``."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small scenarios (a smoke test)")
    p.add_argument("--no-gui", action="store_true", help="skip the GUI scenario")
    p.add_argument(
        "--engine",
        choices=("paced", "llamacpp"),
        default="paced",
        help="llamacpp: scenario 1 only, against llama.cpp running the demo model",
    )
    p.add_argument(
        "--quiet-wait",
        type=int,
        default=120,
        help="seconds to wait for a 1-minute load average below 0.7 before starting",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table. Returns the exit code."""
    args = parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.quiet_wait > 0 and machine.load_average() >= 0.7:
        say(f"load average {machine.load_average():.2f}: waiting up to {args.quiet_wait} s")
        say(f"load average now {machine.wait_for_quiet(args.quiet_wait):.2f}; starting")
    figures = run(sizes, quick=args.quick, gui=not args.no_gui, engine=args.engine)
    print(write(figures, quick=args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
