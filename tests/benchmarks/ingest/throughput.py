"""The throughput phase: one bounded run of one contender over records already produced.

Whole-process figures come from the launcher; the steady interval (first record read to the end
of the last commit) from the contender: waxlake's INFO log lines, the others' report JSON.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable

from tests.benchmarks import spark_setup
from tests.benchmarks.ingest.contenders import (
    RAW_CONTENDERS,
    WAXLAKE_CONTENDERS,
    Target,
    throughput_command,
)
from tests.benchmarks.ingest.measure import Measured, log_tail, run_measured
from tests.benchmarks.ingest.results import Result, quantile

_LOG_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_READING = re.compile(_LOG_TIME + r" INFO connectors\.kafka\.(?:source|reader): reading ")
_COMMITTED = re.compile(
    _LOG_TIME + r" INFO connectors\.delta\.sink: committed .*?(\d+) rows written, .*, (\d+) ms$"
)


def _log_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def waxlake_timings(log: Path) -> dict[str, Any]:
    """From waxlake's INFO log: start of reading, commit times, rows and latencies."""
    first: float | None = None
    last: float | None = None
    rows = 0
    commit_ms: list[float] = []
    for line in log.read_text(errors="replace").splitlines():
        if m := _READING.match(line):
            first = _log_time(m.group(1)) if first is None else first
        elif m := _COMMITTED.match(line):
            last = _log_time(m.group(1))
            rows += int(m.group(2))
            commit_ms.append(float(m.group(3)))
    return {"first_record": first, "last_commit": last, "records": rows, "commit_ms": commit_ms}


def table_stats(uri: Path) -> dict[str, int]:
    """Rows, distinct (partition, offset), Delta versions and data files of a table."""
    dt = DeltaTable(str(uri))
    counts = (
        pl.scan_delta(str(uri))
        .select(
            pl.len().alias("rows"),
            pl.struct("partition", "offset").n_unique().alias("unique"),
        )
        .collect()
    )
    return {
        "rows": int(counts["rows"][0]),
        "unique": int(counts["unique"][0]),
        "commits": dt.version() + 1,
        "files": len(dt.file_uris()),
    }


def run_throughput(
    name: str,
    bootstrap: str,
    topic: str,
    partitions: int,
    records: int,
    workdir: Path,
    epoch_s: int,
    registry_url: str | None = None,
) -> Result:
    """Run contender `name` over `topic` (its `records` records) into `workdir`/`name`."""
    root = workdir / name
    root.mkdir(parents=True)
    log = workdir / f"{name}.log"
    target = Target(
        bootstrap, topic, partitions, root, workdir / f"{name}.report.json", registry_url
    )
    print(f"  {name} ...", end="", flush=True)
    argv, env = throughput_command(name, target, records, epoch_s)
    measured = run_measured(argv, env, log)
    result = _whole(Result(name, records), measured)
    if measured.exit_code != 0:
        result.error = f"exit code {measured.exit_code}; log tail:\n{log_tail(log)}"
        print(f" FAILED (exit {measured.exit_code})", flush=True)
        return result

    if name in WAXLAKE_CONTENDERS:
        timings = waxlake_timings(log)
    elif target.report.exists():
        timings = json.loads(target.report.read_text())
    else:
        timings = {}
    _steady(result, measured, timings)
    if name in RAW_CONTENDERS:
        result.rows = result.unique_rows = timings.get("records")
    else:
        stats = table_stats(target.uri)
        result.rows, result.unique_rows = stats["rows"], stats["unique"]
        result.commits, result.files = stats["commits"], stats["files"]
        if name == "waxlake-avro":  # every record decoded, each with its own id
            ids = pl.scan_delta(str(target.uri)).select(pl.col("id").n_unique()).collect()
            result.unique_rows = min(result.unique_rows, int(ids.item()))
    if result.rows != records or result.unique_rows != records:
        result.error = f"expected {records} rows, got {result.rows} ({result.unique_rows} unique)"
        if name == "peer-spark" and (result.rows or 0) < records:
            result.error += f" ({spark_setup.SHORT_HINT})"
        print(f" WRONG: {result.error}", flush=True)
    else:
        result.ok = True
        print(
            f" {result.records_per_s_whole:,.0f} rec/s whole, "
            f"{(result.records_per_s_steady or 0):,.0f} steady",
            flush=True,
        )
    return result


def _whole(result: Result, measured: Measured) -> Result:
    """Figures of the whole process, start to exit."""
    records = result.records_expected
    result.exit_code = measured.exit_code
    result.wall_s = measured.ended - measured.started
    result.cpu_s = measured.cpu_s
    result.peak_rss_mb = measured.peak_rss_mb
    result.records_per_s_whole = records / result.wall_s if result.wall_s else None
    result.cpu_us_per_record = measured.cpu_s / records * 1e6
    return result


def _steady(result: Result, measured: Measured, timings: dict[str, Any]) -> None:
    """Figures from the first record read to the end of the last commit; commit latencies."""
    records = result.records_expected
    first, last = timings.get("first_record"), timings.get("last_commit")
    if first is not None and last is not None and last > first:
        result.startup_s = first - measured.started
        result.steady_s = last - first
        result.records_per_s_steady = records / result.steady_s
        cpu_first, cpu_last = measured.cpu_at(first), measured.cpu_at(last)
        if cpu_first is not None and cpu_last is not None:
            result.cpu_us_per_record_steady = (cpu_last - cpu_first) / records * 1e6
    commit_ms = timings.get("commit_ms") or []
    result.commit_ms_p50 = quantile(commit_ms, 0.5)
    result.commit_ms_p99 = quantile(commit_ms, 0.99)
    result.commit_ms_max = max(commit_ms) if commit_ms else None
