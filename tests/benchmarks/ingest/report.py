"""What the benchmark prints and keeps: Markdown tables, the Avro goal, the environment."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from tests.benchmarks import spark_setup
from tests.benchmarks.ingest import REPO
from tests.benchmarks.ingest.contenders import quix_python
from tests.benchmarks.ingest.results import Freshness, Result

# The Avro flow's goal against the raw flow on records of the same size (the issue's).
AVRO_MIN_RATE_RATIO = 0.7
AVRO_MAX_CPU_RATIO = 2.0


def fmt(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _commit(p50: float | None, p99: float | None) -> str:
    return f"{fmt(p50)}/{fmt(p99)}" if p50 is not None else "-"


def throughput_table(results: Sequence[Result]) -> str:
    headers = ["contender", "rows ok", "wall s", "rec/s whole", "rec/s steady", "start s"]
    headers += ["CPU us/rec", "CPU us/rec steady", "peak RSS MB", "commits", "commit p50/p99 ms"]
    rows = [
        [
            r.contender,
            ("yes" if r.ok else "NO") if r.runs == 1 else f"{r.runs_ok}/{r.runs}",
            fmt(r.wall_s, 1),
            fmt(r.records_per_s_whole),
            fmt(r.records_per_s_steady),
            fmt(r.startup_s, 1),
            fmt(r.cpu_us_per_record, 2),
            fmt(r.cpu_us_per_record_steady, 2),
            fmt(r.peak_rss_mb),
            fmt(r.commits),
            _commit(r.commit_ms_p50, r.commit_ms_p99),
        ]
        for r in results
    ]
    return render_table(headers, rows)


def freshness_table(results: Sequence[Freshness]) -> str:
    headers = ["contender", "visible/produced", "fresh p50 ms", "fresh p99 ms", "fresh max ms"]
    headers += ["commits", "commit p50/p99 ms", "CPU % core", "peak RSS MB"]
    rows = [
        [
            f.contender,
            f"{f.visible:,}/{f.produced:,}",
            fmt(f.freshness_ms_p50),
            fmt(f.freshness_ms_p99),
            fmt(f.freshness_ms_max),
            fmt(f.commits),
            _commit(f.commit_ms_p50, f.commit_ms_p99),
            fmt(f.cpu_percent_of_core),
            fmt(f.peak_rss_mb),
        ]
        for f in results
    ]
    return render_table(headers, rows)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def avro_vs_raw_flow(results: Sequence[Result]) -> dict[str, Any] | None:
    """waxlake-avro's rec/s and CPU/rec as multiples of waxlake-eo's, against the goal."""
    by_name = {r.contender: r for r in results}
    avro, raw = by_name.get("waxlake-avro"), by_name.get("waxlake-eo")
    if avro is None or raw is None:
        return None
    out: dict[str, Any] = {
        "rate_whole": _ratio(avro.records_per_s_whole, raw.records_per_s_whole),
        "rate_steady": _ratio(avro.records_per_s_steady, raw.records_per_s_steady),
        "cpu_whole": _ratio(avro.cpu_us_per_record, raw.cpu_us_per_record),
        "cpu_steady": _ratio(avro.cpu_us_per_record_steady, raw.cpu_us_per_record_steady),
        "goal": {"min_rate_ratio": AVRO_MIN_RATE_RATIO, "max_cpu_ratio": AVRO_MAX_CPU_RATIO},
    }
    rate, cpu = out["rate_steady"], out["cpu_steady"]
    out["goal_met"] = (
        None
        if rate is None or cpu is None
        else rate >= AVRO_MIN_RATE_RATIO and cpu <= AVRO_MAX_CPU_RATIO
    )
    return out


def avro_line(ratio: dict[str, Any]) -> str:
    verdict = {True: "met", False: "NOT met", None: "unknown"}[ratio["goal_met"]]
    return (
        f"waxlake-avro / waxlake-eo: rec/s {fmt(ratio['rate_steady'], 2)}x steady "
        f"({fmt(ratio['rate_whole'], 2)}x whole), CPU/rec {fmt(ratio['cpu_steady'], 2)}x steady "
        f"({fmt(ratio['cpu_whole'], 2)}x whole); goal >= {AVRO_MIN_RATE_RATIO}x rec/s and "
        f"<= {AVRO_MAX_CPU_RATIO}x CPU/rec (steady): {verdict}"
    )


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def environment_info() -> dict[str, Any]:
    """Versions and the commit measured, for the JSON."""
    packages = ("bytewax", "confluent-kafka", "deltalake", "pyarrow", "polars", "polars-avro")
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": {p: version(p) for p in packages},
    }
    with contextlib.suppress(Exception):
        info["waxlake_commit"] = _git("rev-parse", "--short", "HEAD")
        changes = _git("status", "--porcelain", "--", "connectors", "flows")
        info["waxlake_uncommitted_changes"] = bool(changes)
    if quix_python().exists():
        code = (
            "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('quixstreams', 'confluent-kafka', 'deltalake', 'pyarrow')}))"
        )
        with contextlib.suppress(Exception):
            out = subprocess.run(
                [str(quix_python()), "-c", code], capture_output=True, text=True, check=True
            )
            info["quix_venv_packages"] = json.loads(out.stdout)
    if spark_setup.spark_python().exists():
        info["spark_peer"] = spark_setup.versions()
    return info
