"""What one contender run measured."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
