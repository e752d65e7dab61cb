"""Turns the raw figures of a run into the markdown table of ``bench/RESULTS.md``.

Each row shows the direct and through figures, what the orchestrator adds
(or the through/direct ratio), the goal of issue 14 and whether it was met; a second
table sets the peers (the bare relay, LiteLLM's proxy) beside the orchestrator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import engines_bench
from bench.peer_report import peer_table

NOT_SERVED = "not measured: OpenAI-compatible routes not served yet"
GAP_MS = 20.0  # the paced engine's gap between tokens (bench.scenarios.GAP_MS)
GUI_NOT_YET = "not measured yet"


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    scenario: str
    measure: str
    direct: str = ""
    through: str = ""
    result: str = ""
    goal: str = ""
    verdict: str = ""


def fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    """Return ``value`` rounded with its unit, or "n/a" for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def signed(value: Any, unit: str = " ms", digits: int = 2) -> str:
    """Return ``value`` with an explicit sign (``+1.20 ms``), or "n/a"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):+.{digits}f}{unit}"


def verdict(value: Any, ok: Callable[[float], bool]) -> str:
    """Return "met", "MISSED", or "n/a" when the value is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "met" if ok(float(value)) else "MISSED"


def at_most(goal: float) -> Callable[[float], bool]:
    """Return a check that a value is at most ``goal``."""
    return lambda value: value <= goal


def _single_rows(api: str, fig: dict[str, Any]) -> list[Row]:
    d, t, a = fig["direct"], fig["through"], fig["added"]
    name = f"1. one stream ({api})"
    specs = [
        ("TTFT p50", "ttft_p50_ms", 1.0),
        ("TTFT p99", "ttft_p99_ms", 3.0),
        ("inter-token gap p50", "gap_p50_ms", None),
        ("inter-token gap p99", "gap_p99_ms", 1.0),
    ]
    rows = []
    for label, key, goal in specs:
        rows.append(
            Row(
                name,
                label,
                fmt(d[key], " ms"),
                fmt(t[key], " ms"),
                signed(a[key]),
                f"added <= {goal:g} ms" if goal is not None else "",
                verdict(a[key], at_most(goal)) if goal is not None else "",
            )
        )
    return rows


def _concurrent_rows(
    api: str, streams: int, fig: dict[str, Any], relay_cpu: float | None = None
) -> list[Row]:
    d, t = fig["direct"], fig["through"]
    name = f"2. {streams} streams ({api})"
    ratio_goal = streams == 256
    gap_goal = 5.0 if streams == 256 else None
    cpu = t["cpu_us_per_token"]["orchestrator"]
    return [
        Row(
            name,
            "aggregate tokens/s (first request to last token)",
            fmt(d["tokens_per_s"], digits=0),
            fmt(t["tokens_per_s"], digits=0),
            "x" + fmt(fig["throughput_ratio"], digits=3),
            ">= 0.98 x direct" if ratio_goal else "",
            verdict(fig["throughput_ratio"], lambda v: v >= 0.98) if ratio_goal else "",
        ),
        Row(
            name,
            "steady tokens/s (all streams running)",
            fmt(d["steady_tokens_per_s"], digits=0),
            fmt(t["steady_tokens_per_s"], digits=0),
            "x" + fmt(fig["steady_throughput_ratio"], digits=3),
        ),
        Row(
            name,
            "inter-token gap p99",
            fmt(d["gap_p99_ms"], " ms"),
            fmt(t["gap_p99_ms"], " ms"),
            signed(fig["added"]["gap_p99_ms"]),
            f"added <= {gap_goal:g} ms" if gap_goal else "",
            verdict(fig["added"]["gap_p99_ms"], lambda v: v <= 5.0) if gap_goal else "",
        ),
        Row(
            name,
            "TTFT p99",
            fmt(d["ttft_p99_ms"], " ms"),
            fmt(t["ttft_p99_ms"], " ms"),
            signed(fig["added"]["ttft_p99_ms"]),
            "added <= 50 ms" if streams == 256 else "",
            verdict(fig["added"]["ttft_p99_ms"], at_most(50.0)) if streams == 256 else "",
        ),
        Row(
            f"3. CPU ({api}, {streams} streams)",
            "orchestrator CPU per forwarded token",
            f"engine {fmt(d['cpu_us_per_token']['engine'], ' us', 1)}",
            fmt(cpu, " us", 1),
            f"user {fmt(t['cpu_us_per_token']['orchestrator_user'], ' us', 1)}, "
            f"system {fmt(t['cpu_us_per_token']['orchestrator_system'], ' us', 1)}; "
            f"relay {fmt(relay_cpu, ' us', 1)}",
            "<= 1.2 x relay",
            verdict(cpu / relay_cpu, at_most(1.2)) if relay_cpu else "n/a",
        ),
    ]


def _not_measured(scenario: str, why: str) -> Row:
    return Row(scenario, why, "", "", "", "", "not measured")


def build_rows(fig: dict[str, Any]) -> list[Row]:
    """Return every row of the table for the figures of one run."""
    rows: list[Row] = []
    for api in ("orchqueue", "openai"):
        part = fig.get(api)
        if not isinstance(part, dict) or "single" not in part:
            why = part if isinstance(part, str) else NOT_SERVED
            rows.append(_not_measured(f"1-2. {api} API", why))
            continue
        rows.extend(_single_rows(api, part["single"]))
        for streams, figures in part.get("concurrent", {}).items():
            rows.extend(_concurrent_rows(api, int(streams), figures, relay_cpu(fig, streams)))
    if fig.get("engine", "paced") != "paced":
        return rows
    rows.extend(_memory_rows(fig["memory"]))
    rows.extend(_placement_rows(fig["placement"]))
    rows.extend(_admission_rows(fig["admission"]))
    rows.extend(_gui_rows(fig.get("gui")))
    return rows


def relay_cpu(fig: dict[str, Any], streams: str) -> float | None:
    """Return the bare relay's CPU per forwarded token at ``streams``, when measured."""
    relay = fig.get("peers", {}).get("relay")
    if not isinstance(relay, dict):
        return None
    cpu: float = relay["concurrent"][streams]["through"]["cpu_us_per_token"]["orchestrator"]
    return cpu


def _memory_rows(mem: dict[str, Any]) -> list[Row]:
    direct = mem.get("direct_streams_per_s")
    rate = mem["streams_per_s"] / direct if direct else None
    width = mem.get("concurrency", 64)
    growth = ", ".join(fmt(v, " KiB", 0) for v in mem["rss_growth_kib_per_1000_streams"])
    return [
        Row(
            "3. memory (orchqueue)",
            f"RSS growth per 1,000 streams ({mem['streams']} short streams, two halves)",
            "",
            growth,
            f"RSS {fmt(mem['rss_mib'][0], ' MiB', 1)} -> {fmt(mem['rss_mib'][-1], ' MiB', 1)}",
        ),
        Row(
            "3. memory (orchqueue)",
            f"orchestrator CPU per request ({mem['tokens_per_stream']} tokens each, "
            f"concurrency {width})",
            "",
            fmt(mem["cpu_ms_per_stream"], " ms", 3),
            "",
            "<= 0.3 ms",
            verdict(mem["cpu_ms_per_stream"], at_most(0.3)),
        ),
        Row(
            "3. memory (orchqueue)",
            f"requests completed per second (concurrency {width})",
            fmt(direct, "/s", 0),
            fmt(mem["streams_per_s"], "/s", 0),
            "x" + fmt(rate, digits=3),
            ">= 0.9 x direct",
            verdict(rate, lambda v: v >= 0.9),
        ),
    ]


def _placement_rows(pl: dict[str, Any]) -> list[Row]:
    return [
        Row("4. placement decide, 16 pools", "p50", "", fmt(pl["p50_us"], " us", 1)),
        Row(
            "4. placement decide, 16 pools",
            "p99",
            "",
            fmt(pl["p99_us"], " us", 1),
            "",
            "<= 200 us",
            verdict(pl["p99_us"], lambda v: v <= 200.0),
        ),
    ]


def _admission_rows(adm: dict[str, Any]) -> list[Row]:
    name = f"5. burst of {adm['burst']} at queue capacity {adm['queue_capacity']}"
    counts = f"{adm['rejected']} rejected, {adm['accepted']} admitted"
    return [
        Row(name, "time to 429 p50", "", fmt(adm["reject_p50_ms"], " ms"), counts),
        Row(name, "time to 429 p99", "", fmt(adm["reject_p99_ms"], " ms")),
        Row(name, "time to 202 (admitted) p99", "", fmt(adm["accept_p99_ms"], " ms")),
    ]


def _gui_rows(gui: Any) -> list[Row]:
    if not isinstance(gui, dict) or "rates" not in gui:
        why = gui if isinstance(gui, str) else GUI_NOT_YET
        return [_not_measured("6. GUI (offscreen)", why)]
    rows = []
    for rate, g in gui["rates"].items():
        goal = rate == "5000"
        name = f"6. GUI at {rate} tokens/s ({g['streams']} chats, LAN client streaming)"
        qt = g["gui_thread_cpu_share"] * 100
        lan_added = (g.get("api_gap_p99_ms") or math.nan) - GAP_MS
        rows += [
            Row(
                name,
                "Qt thread CPU share (the window only; the backend has its own thread)",
                "",
                fmt(qt, " %", 1),
                f"backend thread {fmt(g.get('backend_thread_cpu_share', math.nan) * 100, ' %', 1)}"
                f" (no window: {fmt(g['baseline_cpu_share'] * 100, ' %', 1)}); "
                f"{fmt(g['tokens_per_s'], ' tokens/s', 0)} delivered",
                "<= 15 % of a core" if goal else "",
                verdict(qt, at_most(15.0)) if goal else "",
            ),
            Row(
                name,
                "backend loop lag p99",
                f"no window {fmt(g['baseline_loop_lag_p99_ms'], ' ms')}",
                fmt(g["loop_lag_p99_ms"], " ms"),
                "",
                "<= 5 ms" if goal else "",
                verdict(g["loop_lag_p99_ms"], at_most(5.0)) if goal else "",
            ),
            Row(
                name,
                f"LAN client inter-token gap p99, added to the engine's {GAP_MS:g} ms",
                f"no window {fmt(g.get('baseline_api_gap_p99_ms'), ' ms')}",
                fmt(g.get("api_gap_p99_ms"), " ms"),
                signed(lan_added),
                "added <= 5 ms" if goal else "",
                verdict(lan_added, at_most(5.0)) if goal else "",
            ),
        ]
    return rows


def _engine_words(fig: dict[str, Any], m: dict[str, Any]) -> str:
    if fig.get("engine", "paced") == "llamacpp":
        return "engine (llama-cpp-python's server on the generated demo model, on the CPU)"
    return f"paced engine (`bench/paced_engine.py`, one token every {m['gap_ms']:g} ms per stream)"


def _waiting_notes(fig: dict[str, Any]) -> list[str]:
    """Return a note for each run where through streams waited long to start."""
    notes = []
    for api in ("orchqueue", "openai"):
        part = fig.get(api)
        concurrent = part.get("concurrent", {}) if isinstance(part, dict) else {}
        for streams, f in concurrent.items():
            d, t = f["direct"], f["through"]
            if t["ttft_p99_ms"] > 4 * max(d["ttft_p99_ms"], 250.0):
                notes.append(
                    f"At {streams} streams ({api}) some streams through the orchestrator waited "
                    f"{t['ttft_p99_ms'] / 1000:.1f} s (TTFT p99) for their first token, so fewer "
                    "streams ran at once than directly: read that run's gap figures with this in "
                    "mind (see bench/PROFILE.md for the cause)."
                )
                notes.append("")
    return notes


def _contention(seen: dict[str, dict[str, float]]) -> str:
    if not seen:
        return ""
    worst = max(seen, key=lambda k: seen[k]["others_cpu_share"])
    share = seen[worst]["others_cpu_share"] * 100
    first = next(iter(seen.values()))
    return (
        f"Other processes on the machine used at most {share:.0f}% of its CPU during one "
        f"scenario ({worst}); the 1-minute load average was {first['load_start']:.2f} at the "
        "start. The share per scenario is in results.json (`contention`)."
    )


HEADER = ("Scenario", "Measure", "Direct", "Through", "Added / ratio", "Goal", "Verdict")


def table(rows: list[Row]) -> str:
    """Return ``rows`` as a markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        cells = (r.scenario, r.measure, r.direct, r.through, r.result, r.goal, r.verdict)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(fig: dict[str, Any]) -> str:
    """Return the whole RESULTS.md text for the figures of one run."""
    m = fig["machine"]
    rows = build_rows(fig)
    missed = [f"{r.scenario}: {r.measure}" for r in rows if r.verdict == "MISSED"]
    parts = [
        "# Benchmark results",
        "",
        f"Measured {m['date']} on {m['cores']} cores ({m['cpu_model']}), Python {m['python']}, "
        f"aiohttp {m['aiohttp']}, by `make bench` (`python -m bench`). Raw figures: "
        f"`bench/out/results{'' if fig.get('engine', 'paced') == 'paced' else '-llamacpp'}.json`.",
        "",
        "The load generator, the orchestrator (`llama-orch serve`, one `openai` pool) and the "
        f"{_engine_words(fig, m)} all run on this machine and share its cores, so the "
        "figures at high concurrency include the contention between them. *Direct* streams "
        "go straight to the engine; *through* streams go through the orchestrator to the same "
        "engine, "
        "measured in the same run. *Added* is through minus direct.",
        "",
        table(rows),
        "",
        *engines_bench.markdown(fig.get("engines")),
        *peer_table(fig),
        *_waiting_notes(fig),
        _contention(fig.get("contention", {})),
        "",
        "Goals met: "
        + f"{sum(r.verdict == 'met' for r in rows)}, missed: {len(missed)}"
        + ("" if not missed else " (" + "; ".join(missed) + ")")
        + ". Where the time goes: `bench/PROFILE.md`.",
        "",
    ]
    return "\n".join(parts)
