"""Parquet writer benchmark: what waxlake's writer properties cost to write and to read back.

    python tests/benchmarks/bench_parquet.py                  # 500,000 rows, 200 B and 1 KB
    python tests/benchmarks/bench_parquet.py --rows 200000 --sizes 1024 --values json

Writes the job's own record rows (topic, partition, offset, timestamp, key, value, headers),
250,000 rows a call as the job's flushes, in chunks of 10,000 rows of one partition (as polls
come), into a fresh table per setting:

  delta-rs default   `write_deltalake` without WriterProperties (snappy, dictionaries and
                     statistics on every column)
  delta-rs lz4_raw   `write_deltalake` with waxlake's properties (what the job used before its
                     own writer)
  <codec>            the job's writer (`ParquetAppender`: pyarrow files, one per partition, and
                     a Delta commit of their add actions) with that codec: lz4_raw (the
                     default), zstd:1, snappy, uncompressed

Values are either `pool`, what the ingest benchmark produces (slices of one pool of random bytes
at 4,096 offsets: few distinct values, so dictionaries and codecs find long repeats), or `json`,
distinct JSON documents (repeated field names, numbers, short strings: what most topics carry). Reported
per setting: CPU microseconds per row of the write calls (process CPU: delta-rs encodes on its
own threads), bytes on disk per row, and the reads a user makes afterwards: `pl.read_delta` of
the whole table and a `pl.scan_delta` filtered on (partition, offset), wall ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
from deltalake import DeltaTable, write_deltalake  # noqa: E402

from connectors.delta.parquet import writer_properties  # noqa: E402
from connectors.delta.parquet_files import ParquetAppender, fitted  # noqa: E402
from connectors.kafka.records import PARTITION_COLUMNS, SCHEMA  # noqa: E402
from tests.benchmarks.ingest.report import fmt, render_table  # noqa: E402

SETTINGS = ("delta-rs default", "delta-rs lz4_raw", "lz4_raw", "zstd:1", "snappy", "uncompressed")
CALL_ROWS = 250_000
POLL_ROWS = 10_000
PARTITIONS = 4


def pool_values(size: int, rows: int) -> list[bytes]:
    pool = os.urandom(size + 4096)
    return [pool[i % 4096 : i % 4096 + size] for i in range(rows)]


def json_values(size: int, rows: int) -> list[bytes]:
    rng = random.Random(7)
    words = ["checkout", "search", "login", "view", "cart", "refund", "signup", "logout"]
    out = []
    for i in range(rows):
        doc: dict[str, Any] = {
            "id": i,
            "type": rng.choice(words),
            "user": f"user-{rng.randrange(100_000)}",
            "amount": round(rng.random() * 1000, 2),
            "ts": 1_764_000_000_000 + i,
            "tags": rng.sample(words, 3),
        }
        text = json.dumps(doc)
        while len(text) < size - 20:
            doc[f"f{len(doc)}"] = rng.choice(words) + str(rng.randrange(10_000))
            text = json.dumps(doc)
        out.append(text.encode()[:size] if len(text) > size else text.encode())
    return out


def rows_table(values: list[bytes], start: int) -> pa.Table:
    n = len(values)
    offsets = pa.array(range(start, start + n), type=pa.int64())
    table = pa.Table.from_arrays(
        [
            pa.repeat(pa.scalar("events", pa.string()), n),
            pa.array([(start + i) // POLL_ROWS % PARTITIONS for i in range(n)], type=pa.int32()),
            offsets,
            pa.array(range(1_764_000_000_000, 1_764_000_000_000 + n), type=pa.int64()).cast(
                SCHEMA.field("timestamp").type
            ),
            pa.array([b"%d" % (start + i) for i in range(n)], type=pa.binary()),
            pa.array(values, type=pa.binary()),
            pa.array([[]] * n, type=SCHEMA.field("headers").type),
        ],
        schema=SCHEMA,
    )
    return pa.Table.from_batches(table.to_batches(max_chunksize=POLL_ROWS))


def write(setting: str, uri: str, chunk: pa.Table) -> None:
    """One flush's write, as `setting` makes it."""
    if setting == "delta-rs default":
        write_deltalake(uri, chunk, mode="append", partition_by=PARTITION_COLUMNS)
        return
    if setting == "delta-rs lz4_raw":
        props = writer_properties("lz4_raw")
        write_deltalake(
            uri, chunk, mode="append", partition_by=PARTITION_COLUMNS, writer_properties=props
        )
        return
    if not Path(uri).exists():
        DeltaTable.create(uri, SCHEMA, partition_by=PARTITION_COLUMNS)
    table = DeltaTable(uri)
    schema = pa.schema(table.schema().to_arrow())
    rows = fitted(table, chunk, schema)
    assert rows is not None
    ParquetAppender(setting).append(table, rows, schema, None)


def timed(call: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall s, process CPU s, result) of `call()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bench(setting: str, chunks: list[pa.Table], where: Path) -> dict[str, Any]:
    uri = str(where / setting.replace(" ", "-").replace(":", "-"))
    cpu = 0.0
    for chunk in chunks:
        started = time.process_time()
        write(setting, uri, chunk)
        cpu += time.process_time() - started
    rows = sum(c.num_rows for c in chunks)
    disk = sum(f.stat().st_size for f in Path(uri).rglob("*.parquet"))
    full_s, _, frame = timed(lambda: pl.read_delta(uri))
    assert frame.height == rows
    lo, hi = rows // 2, rows // 2 + 1000
    scan_s, _, part = timed(
        lambda: (
            pl.scan_delta(uri)
            .filter((pl.col("partition") == 1) & pl.col("offset").is_between(lo, hi))
            .collect()
        )
    )
    assert part.height > 0
    return {
        "setting": setting,
        "write_cpu_us_per_row": cpu / rows * 1e6,
        "bytes_per_row": disk / rows,
        "read_full_ms": full_s * 1000,
        "read_filtered_ms": scan_s * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Parquet writer benchmark (see the docstring).")
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--sizes", default="200,1024")
    parser.add_argument("--values", default="pool,json", help="pool, json or both")
    parser.add_argument("--json", type=Path, default=REPO / "tests/benchmarks/results/parquet.json")
    args = parser.parse_args(argv)
    makers = {"pool": pool_values, "json": json_values}
    results = []
    for kind in args.values.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            values = makers[kind](size, args.rows)
            chunks = [
                rows_table(values[i : i + CALL_ROWS], i) for i in range(0, args.rows, CALL_ROWS)
            ]
            where = Path(tempfile.mkdtemp(prefix="waxlake-parquet-"))
            try:
                found = [bench(s, chunks, where) | {"values": kind, "size": size} for s in SETTINGS]
            finally:
                shutil.rmtree(where, ignore_errors=True)
            results += found
            print(f"\n{args.rows:,} rows, {kind} values of {size} B")
            headers = [
                "setting",
                "write CPU us/row",
                "bytes/row",
                "read all ms",
                "read filtered ms",
            ]
            print(
                render_table(
                    headers,
                    [
                        [
                            r["setting"],
                            fmt(r["write_cpu_us_per_row"], 2),
                            fmt(r["bytes_per_row"]),
                            fmt(r["read_full_ms"]),
                            fmt(r["read_filtered_ms"]),
                        ]
                        for r in found
                    ],
                ),
                flush=True,
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON result: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
