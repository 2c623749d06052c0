"""Exact counts: every record the broker acknowledged, by (partition, offset), against every row
that landed in the guarantee's table or its dead-letter table (`<root>/_dead_letters/<topic>`).

lost = acknowledged but in neither table; duplicated = rows beyond the first of the same
(partition, offset) (a record landed three times counts two); unknown = rows of offsets never
acknowledged (must be 0: a sign the counts themselves are wrong). Rows are read file by file
(only the `offset` and `timestamp` columns, the partition from the file's partition value) so
that each row carries the moment its file became visible (see `latency`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from connectors.delta.dead_letters import DEAD_LETTER_DIR
from connectors.ops.lab.latency import data_commits, file_visibility, read_log
from connectors.ops.lab.workload import Acked

KEY = ["partition", "offset"]


@dataclass(frozen=True)
class Landed:
    """What a guarantee's tables hold: one row per landed row, and the commits that made them."""

    rows: pl.DataFrame  # partition, offset, produced_ms, visible_ms
    commits: int


@dataclass(frozen=True)
class Counts:
    produced: int
    rows: int
    unique: int
    lost: int
    duplicated: int
    unknown: int
    latencies_ms: np.ndarray  # per record that landed, its first visible moment - produced


def _table_rows(table_dir: Path) -> tuple[list[pl.DataFrame], int]:
    commits = read_log(table_dir)
    visible = file_visibility(commits)
    actions = pa.table(DeltaTable(str(table_dir)).get_add_actions(flatten=True))
    paths = actions["path"].to_pylist()
    partitions = actions["partition.partition"].to_pylist()
    written = pc.cast(actions["modification_time"], pa.int64()).to_pylist()
    frames = []
    for path, partition, mtime in zip(paths, partitions, written, strict=True):
        data = pq.read_table(table_dir / path, columns=["offset", "timestamp"])
        stamps = pc.cast(data["timestamp"], pa.timestamp("ms", "UTC"), safe=False)
        frames.append(
            pl.DataFrame(
                {
                    "partition": np.full(data.num_rows, int(partition), dtype=np.int32),
                    "offset": data["offset"].to_numpy(),
                    "produced_ms": pc.cast(stamps, pa.int64()).to_numpy().astype(np.float64),
                    "visible_ms": np.full(data.num_rows, visible.get(path, float(mtime or 0))),
                }
            )
        )
    return frames, data_commits(commits)


def landed(root: Path, topic: str) -> Landed:
    """Every row of `<root>/<topic>` and `<root>/_dead_letters/<topic>` (either may not exist)."""
    frames: list[pl.DataFrame] = []
    commits = 0
    for table_dir in (root / topic, root / DEAD_LETTER_DIR / topic):
        if (table_dir / "_delta_log").is_dir():
            found, made = _table_rows(table_dir)
            frames += found
            commits += made
    empty = pl.DataFrame(
        schema={
            "partition": pl.Int32,
            "offset": pl.Int64,
            "produced_ms": pl.Float64,
            "visible_ms": pl.Float64,
        }
    )
    return Landed(pl.concat([empty, *frames]), commits)


def acked_frame(acked: Acked) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "partition": np.frombuffer(acked.partitions, dtype=np.int32),
            "offset": np.frombuffer(acked.offsets, dtype=np.int64),
        }
    ).unique()


def count(acked: pl.DataFrame, rows: pl.DataFrame) -> Counts:
    """Lost, duplicated and unknown of `rows` (partition, offset, produced_ms, visible_ms)
    against `acked` (partition, offset), and the latency of each acknowledged record that landed."""
    per_key = rows.group_by(KEY).agg(
        pl.len().alias("copies"),
        pl.col("produced_ms").min(),
        pl.col("visible_ms").min(),
    )
    found = acked.join(per_key, on=KEY, how="inner")
    unknown = per_key.join(acked, on=KEY, how="anti")
    latencies = (found["visible_ms"] - found["produced_ms"]).to_numpy()
    return Counts(
        produced=acked.height,
        rows=rows.height,
        unique=per_key.height,
        lost=acked.height - found.height,
        duplicated=int((per_key["copies"] - 1).sum()),
        unknown=unknown.height,
        latencies_ms=latencies,
    )
