"""What the benchmark prints and keeps: Markdown tables and the environment."""

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


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def environment_info() -> dict[str, Any]:
    """Versions and the commit measured, for the JSON."""
    packages = ("bytewax", "confluent-kafka", "deltalake", "pyarrow", "polars")
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
