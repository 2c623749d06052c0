"""Does a table stay cheap as it ages? Commit latency and read time over 10,000 commits.

    python tests/benchmarks/bench_ageing.py [--commits 10000] [--rows-per-commit 2000]

Drives waxlake's own table writer (exactly-once path: markers read, filter, append with `txn`,
maintenance at its default intervals) with one batch per commit over 4 partitions, and reports
the commit latency around versions 10, 1,000 and 10,000 (with the table's row count there), then
how long `pl.read_delta` takes on the aged table against the same rows written in one go.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from connectors.delta.maintenance import MaintenancePolicy
from connectors.delta.table_writer import DeltaTableWriter
from connectors.kafka.records import SCHEMA

PARTITIONS = 4


def batch(first_offset: int, rows_per_partition: int) -> pa.Table:
    n = rows_per_partition * PARTITIONS
    offsets = [first_offset + i // PARTITIONS for i in range(n)]
    return pa.Table.from_pydict(
        {
            "topic": ["ageing"] * n,
            "partition": [i % PARTITIONS for i in range(n)],
            "offset": offsets,
            "timestamp": [1_700_000_000_000 + o for o in offsets],
            "key": [b"k%d" % o for o in offsets],
            "value": [
                b'{"user": %d, "amount": %d, "note": "some text to make it 100 bytes or so ....."}'
                % (o, o % 97)
                for o in offsets
            ],
            "headers": [[] for _ in range(n)],
        },
        schema=SCHEMA,
    )


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--rows-per-commit", type=int, default=2_000)
    parser.add_argument(
        "--log-retention",
        default="interval 15 seconds",
        help="the run compresses time (~15 commits/s): 15 s of log is ~240 log files, the "
        "default 1 hour at one commit every 5 s is 720",
    )
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "ageing.json"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="waxlake-ageing-"))
    uri = str(work / "aged")
    writer = DeltaTableWriter(
        uri, "ageing", maintenance=MaintenancePolicy(log_retention=args.log_retention)
    )
    per_partition = args.rows_per_commit // PARTITIONS
    latencies: list[float] = []
    started = time.perf_counter()
    for commit in range(args.commits):
        data = batch(commit * per_partition, per_partition)
        t0 = time.perf_counter()
        writer.write_exactly_once(data)
        latencies.append(time.perf_counter() - t0)
        if (commit + 1) % 1000 == 0:
            print(
                f"{commit + 1} commits, last 1000: p50 {p50(latencies[-1000:]):.1f} ms", flush=True
            )
    total_s = time.perf_counter() - started

    windows = {}
    for at in (10, 1_000, 10_000):
        if at <= args.commits:
            lo = max(0, min(at - 50, args.commits - 100))
            hi = min(args.commits, lo + 100)
            windows[at] = {
                "p50_ms": round(p50(latencies[lo:hi]), 2),
                "p99_ms": round(sorted(latencies[lo:hi])[int(0.99 * (hi - lo - 1))] * 1000, 2),
                "rows_in_table": at * args.rows_per_commit,
            }

    t0 = time.perf_counter()
    aged = pl.read_delta(uri)
    read_aged = time.perf_counter() - t0
    one_go_uri = str(work / "one_go")
    write_deltalake(one_go_uri, aged.to_arrow(), partition_by=["partition"])
    t0 = time.perf_counter()
    pl.read_delta(one_go_uri)
    read_one_go = time.perf_counter() - t0

    result = {
        "commits": args.commits,
        "rows": aged.height,
        "write_seconds": round(total_s, 1),
        "commit_latency": windows,
        "read_aged_s": round(read_aged, 3),
        "read_one_go_s": round(read_one_go, 3),
        "read_ratio": round(read_aged / read_one_go, 2),
        "files_aged": len(list((work / "aged").rglob("*.parquet"))),
    }
    print(json.dumps(result, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
