"""The speed goals, judged: each contender against the raw floor, ratios taken within one run.

Ratios come from the same run (contender i of run k against `raw` of run k), then their median
over the runs, so that a slow spell of the shared machine, which slows a whole run, cancels out.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from tests.benchmarks.ingest.report import fmt, render_table
from tests.benchmarks.ingest.results import Result

FLOOR = "raw"
JOB = "waxlake-eo"
PEERS = ("peer-bytewax", "peer-quix", "peer-spark")
# Per record size: (least wall rate as a multiple of the floor's, most CPU/rec as a multiple).
FLOOR_GOALS = {200: (0.9, 1.5), 1024: (0.7, 2.0)}
LEANEST_PEER_CPU = 3.0  # the job's CPU/rec at least this many times less than the leanest peer
RSS_MB = 1024.0


def _median_ratio(pairs: Sequence[tuple[float | None, float | None]]) -> float | None:
    ratios = [a / b for a, b in pairs if a is not None and b]
    return statistics.median(ratios) if ratios else None


def _pairs(runs: Sequence[Sequence[Result]], name: str, field: str) -> list[tuple[Any, Any]]:
    out = []
    for results in runs:
        by_name = {r.contender: r for r in results if r.ok}
        if name in by_name and FLOOR in by_name:
            out.append((getattr(by_name[name], field), getattr(by_name[FLOOR], field)))
    return out


def against_floor(runs: Sequence[Sequence[Result]]) -> dict[str, dict[str, float | None]]:
    """Per contender: rec/s (whole, steady) and CPU/rec (whole, steady) as multiples of raw's."""
    names = [r.contender for r in runs[0] if r.contender != FLOOR]
    fields = {
        "rate_whole": "records_per_s_whole",
        "rate_steady": "records_per_s_steady",
        "cpu_whole": "cpu_us_per_record",
        "cpu_steady": "cpu_us_per_record_steady",
    }
    return {
        name: {key: _median_ratio(_pairs(runs, name, field)) for key, field in fields.items()}
        for name in names
    }


def verdicts(size: int, medians: Sequence[Result], ratios: dict[str, Any]) -> list[str]:
    """One line per goal of the issue: reached or not, with the figure."""
    lines = []
    job = ratios.get(JOB)
    if job is not None and size in FLOOR_GOALS:
        least_rate, most_cpu = FLOOR_GOALS[size]
        rate, cpu = job["rate_whole"], job["cpu_whole"]
        lines.append(_verdict(f"wall rate >= {least_rate}x raw", rate, lambda v: v >= least_rate))
        lines.append(_verdict(f"CPU/rec <= {most_cpu}x raw", cpu, lambda v: v <= most_cpu))
    by_name = {m.contender: m for m in medians}
    peers = [by_name[p] for p in PEERS if p in by_name and by_name[p].cpu_us_per_record]
    if JOB in by_name and peers and by_name[JOB].cpu_us_per_record:
        leanest = min(peers, key=lambda p: p.cpu_us_per_record or 0.0)
        times = (leanest.cpu_us_per_record or 0.0) / (by_name[JOB].cpu_us_per_record or 1.0)
        goal = f"CPU/rec >= {LEANEST_PEER_CPU:g}x less than the leanest peer ({leanest.contender})"
        lines.append(_verdict(goal, times, lambda v: v >= LEANEST_PEER_CPU))
    rss = by_name[JOB].peak_rss_mb if JOB in by_name else None
    if size >= 1024 and rss is not None:
        lines.append(f"peak RSS < {RSS_MB:,.0f} MB: {fmt(rss)} MB, {_met(rss < RSS_MB)}")
    return lines


def _verdict(goal: str, value: float | None, reached: Callable[[float], bool]) -> str:
    if value is None:
        return f"{goal}: unknown"
    return f"{goal}: {fmt(value, 2)}x, {_met(reached(value))}"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def floor_table(ratios: dict[str, dict[str, float | None]]) -> str:
    headers = ["vs raw (median of per-run ratios)", "rec/s whole", "rec/s steady"]
    headers += ["CPU/rec whole", "CPU/rec steady"]
    rows = [
        [name]
        + [
            f"{fmt(r[k], 2)}x" if r[k] is not None else "-"
            for k in ("rate_whole", "rate_steady", "cpu_whole", "cpu_steady")
        ]
        for name, r in ratios.items()
    ]
    return render_table(headers, rows)
