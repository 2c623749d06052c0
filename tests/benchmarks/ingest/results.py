"""What one contender run measured, and the median of several runs of it."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace


@dataclass
class Result:
    """One throughput run of one contender (whole process, and steady: first record to end)."""

    contender: str
    records_expected: int
    ok: bool = False
    error: str | None = None
    rows: int | None = None
    unique_rows: int | None = None
    exit_code: int | None = None
    wall_s: float | None = None
    startup_s: float | None = None
    steady_s: float | None = None
    records_per_s_whole: float | None = None
    records_per_s_steady: float | None = None
    cpu_s: float | None = None
    cpu_us_per_record: float | None = None
    cpu_us_per_record_steady: float | None = None
    peak_rss_mb: float | None = None
    commits: int | None = None
    files: int | None = None
    commit_ms_p50: float | None = None
    commit_ms_p99: float | None = None
    commit_ms_max: float | None = None
    runs: int = 1  # how many runs a median stands for
    runs_ok: int | None = None


@dataclass
class Freshness:
    """One freshness run: produce time to visible in the table, at a fixed produce rate."""

    contender: str
    rate: int
    seconds: float
    ok: bool = False
    error: str | None = None
    produced: int = 0
    visible: int = 0
    exit_code: int | None = None
    freshness_ms_p50: float | None = None
    freshness_ms_p99: float | None = None
    freshness_ms_max: float | None = None
    commits: int | None = None
    commit_ms_p50: float | None = None
    commit_ms_p99: float | None = None
    cpu_percent_of_core: float | None = None
    peak_rss_mb: float | None = None


def quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile (no interpolation), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


_NOT_MEDIAN = {"contender", "records_expected", "ok", "error", "runs", "runs_ok", "exit_code"}


def median_result(runs: Sequence[Result]) -> Result:
    """Each figure's median over the runs that passed (over all of them if none did).

    Medians are taken figure by figure, so a median's rec/s and its CPU/rec may come from
    different runs; every run is kept in the JSON. ok only if every run was.
    """
    passed = [r for r in runs if r.ok] or list(runs)
    median = replace(runs[0], runs=len(runs), runs_ok=sum(r.ok for r in runs))
    median.ok = all(r.ok for r in runs)
    median.error = next((r.error for r in runs if r.error), None)
    median.exit_code = next((r.exit_code for r in runs if r.exit_code), runs[0].exit_code)
    for field in fields(Result):
        if field.name in _NOT_MEDIAN:
            continue
        values = [v for r in passed if (v := getattr(r, field.name)) is not None]
        value = statistics.median(values) if values else None
        if value is not None and field.type in ("int | None", "int"):
            value = round(value)
        setattr(median, field.name, value)
    return median
