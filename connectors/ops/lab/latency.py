"""Produce-to-visible latency, exact, read after the run from the table's own log.

A row becomes visible when the commit that adds its data file does: when `_delta_log/<v>.json`
is written (delta-rs writes the entry to a temporary file and renames it into place, so that
file's modification time is the commit's, to the millisecond). Each `add` action of the entry
names a data file; its rows were produced at their Kafka `timestamp`, which the lab sets to the
produce wall time. Latency = visible - produced, per row; a duplicated row counts at its first
visible moment, and a lost row has none.

The job runs with compaction and vacuum off in the lab, so every live file is the one its commit
added. A live file whose log entry is gone (only after the log retention) falls back to its add
action's `modificationTime`, when the file was written, a commit's duration before it was
visible. Reading the log afterwards costs the run nothing and misses no commit, where a poller
sees versions only at its poll interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np


@dataclass(frozen=True)
class Commit:
    """One version of a table: when it became visible and the data files it added."""

    version: int
    visible_ms: float
    operation: str
    adds: tuple[str, ...]


def read_log(table_dir: Path) -> list[Commit]:
    """Every version whose JSON log entry is still there, in order."""
    commits: list[Commit] = []
    log_dir = table_dir / "_delta_log"
    for entry in sorted(log_dir.glob("[0-9]*.json")):
        operation, adds = "", []
        for line in entry.read_text().splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            if "add" in action:
                adds.append(unquote(action["add"]["path"]))
            elif "commitInfo" in action:
                operation = str(action["commitInfo"].get("operation", ""))
        visible_ms = entry.stat().st_mtime_ns / 1e6
        commits.append(Commit(int(entry.stem), visible_ms, operation, tuple(adds)))
    return commits


def file_visibility(commits: list[Commit]) -> dict[str, float]:
    """Data file path (relative to the table) -> when its commit became visible (ms)."""
    return {path: commit.visible_ms for commit in commits for path in commit.adds}


def data_commits(commits: list[Commit]) -> int:
    """The job's commits that landed rows: versions that add files (not the table's creation,
    nor the job's metadata-only commits such as stamping the topic's ID)."""
    return sum(1 for c in commits if c.adds)


def quantile(values: np.ndarray, q: float) -> float | None:
    """The q-quantile of `values` (linear interpolation), None when there are none."""
    if values.size == 0:
        return None
    return float(np.quantile(values, q))
