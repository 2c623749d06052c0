"""Current-state (upsert) benchmark: MERGE cost as the state table grows.

    python tests/benchmarks/bench_state.py                       # N = 1M and 10M, both shapes
    python tests/benchmarks/bench_state.py --keys 1000000 --changes 200000 --shapes cdc

For each N: a state table is loaded with N keys (written directly, laid out as the job lays it
out: partitioned by key bucket, files in key order), then --changes changes are produced to a
4-partition topic and `flows.upsert_to_delta` lands them (a bounded run). The key is the value's
`id` field (`WAXLAKE_KEY_FIELDS=id`, as for a database table's primary key), or with
`--key kafka` the Kafka record key. Changes: 80% updates, 15% inserts of new keys, 5% deletes,
in two shapes: `uniform` (updates and deletes hit any key) and `cdc` (they hit the newest 5% of
keys, as in a database whose recent rows are the busy ones; inserts are newest by nature).
Reported: changes/s (from the first record read to the last commit), commit p50/p99 (the job's
own "committed ..., N ms" log lines), CPU seconds and the job's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from deltalake import DeltaTable, write_deltalake  # noqa: E402

from connectors.decoding.state_changes import BUCKET, key_buckets  # noqa: E402
from connectors.local_broker import create_topic, start_tansu  # noqa: E402

PARTITIONS = 4
BUCKETS = 16
COMMITTED = re.compile(r"^(\S+ \S+) INFO connectors\.delta\.sink: committed .*, (\d+) ms$", re.M)
READING = re.compile(r"^(\S+ \S+) INFO connectors\.kafka\.(?:source|reader): reading ", re.M)


def key(i: int) -> bytes:
    return f"{i:012d}".encode()


def load_state(uri: str, keys: int, key_column: str) -> None:
    """A state table of `keys` rows, as the job would hold them (offsets before the topic's)."""
    chunk = 1_000_000
    for start in range(0, keys, chunk):
        ids = range(start, min(keys, start + chunk))
        table = pa.table(
            {
                "topic": pa.array(["state"] * len(ids)),
                "partition": pa.array([i % PARTITIONS for i in ids], pa.int32()),
                "offset": pa.array([-1] * len(ids), pa.int64()),
                "timestamp": pa.array([0] * len(ids), pa.timestamp("us", tz="UTC")),
                **(
                    {"key": pa.array([key(i) for i in ids], pa.binary())}
                    if key_column == "key"
                    else {}
                ),
                "id": pa.array(list(ids), pa.int64()),
                "v": pa.array([0] * len(ids), pa.int64()),
                "pad": pa.array(["x" * 40] * len(ids)),
            }
        )
        table = table.append_column(BUCKET, key_buckets(table.select([key_column]), BUCKETS))
        write_deltalake(uri, table, mode="append", partition_by=[BUCKET])
    DeltaTable(uri).create_checkpoint()


def produce_changes(
    bootstrap: str, topic: str, keys: int, changes: int, shape: str, by_fields: bool
) -> None:
    rng = random.Random(7)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "enable.idempotence": True}
    )
    next_new = keys
    for seq in range(changes):
        roll = rng.random()
        if roll < 0.15:  # an insert of a new key
            i, next_new = next_new, next_new + 1
        elif shape == "cdc":
            i = rng.randrange(int(next_new * 0.95), next_new)
        else:
            i = rng.randrange(0, next_new)
        row = {"id": i, "v": seq, "pad": "x" * 40}
        if by_fields:  # Debezium change events: the key is the row's id
            op = "d" if roll > 0.95 else ("c" if roll < 0.15 else "u")
            event = {
                "op": op,
                "before": row if op == "d" else None,
                "after": None if op == "d" else row,
            }
            value: bytes | None = json.dumps(event).encode()
        else:  # a keyed topic: tombstones delete
            value = None if roll > 0.95 else json.dumps(row).encode()
        while True:
            try:
                producer.produce(topic, key=key(i), value=value, partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
        if seq % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0


def run_job(bootstrap: str, topic: str, root: Path, log: Path, by_fields: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAXLAKE_", "BYTEWAX_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        WAXLAKE_TOPICS=topic,
        WAXLAKE_TABLE_ROOT=str(root),
        WAXLAKE_STOP_AT_END="1",
        WAXLAKE_KEY_BUCKETS=str(BUCKETS),
        WAXLAKE_GROUP_ID=f"bench-{topic}",
        PYTHONPATH=str(REPO),
    )
    if by_fields:
        env.update(WAXLAKE_KEY_FIELDS="id", WAXLAKE_CDC_FORMAT="debezium")
    cmd = [
        sys.executable,
        "-m",
        "bytewax.run",
        "flows.upsert_to_delta:flow",
        "-r",
        str(root / "_recovery"),
        "-s",
        "5",
        "-b",
        "0",
    ]
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the job failed:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    commits = [int(ms) for _, ms in COMMITTED.findall(text)]
    stamps = [
        time.mktime(time.strptime(t[:19], "%Y-%m-%d %H:%M:%S")) + float("0." + t[20:])
        for t, _ in COMMITTED.findall(text)
    ]
    first = READING.search(text)
    first_at = time.mktime(time.strptime(first.group(1)[:19], "%Y-%m-%d %H:%M:%S")) if first else 0
    return {
        "wall_s": wall,
        "steady_s": (stamps[-1] - first_at) if stamps and first else wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "commits": len(commits),
        "commit_p50_ms": sorted(commits)[len(commits) // 2] if commits else None,
        "commit_p99_ms": sorted(commits)[min(len(commits) - 1, int(len(commits) * 0.99))]
        if commits
        else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", default="1000000,10000000", help="comma-separated N")
    parser.add_argument("--changes", type=int, default=2_000_000)
    parser.add_argument("--shapes", default="uniform,cdc")
    parser.add_argument("--key", choices=["fields", "kafka"], default="fields")
    parser.add_argument("--out", type=Path, default=REPO / "tests/benchmarks/results/state.json")
    args = parser.parse_args()
    results = []
    with start_tansu() as broker, tempfile.TemporaryDirectory(prefix="waxlake-bench-state-") as tmp:
        for keys in [int(k) for k in args.keys.split(",")]:
            for shape in args.shapes.split(","):
                root = Path(tmp) / f"{keys}-{shape}"
                topic = f"state-{keys}-{shape}"
                started = time.monotonic()
                by_fields = args.key == "fields"
                load_state(str(root / topic), keys, "id" if by_fields else "key")
                loaded = time.monotonic() - started
                create_topic(broker.bootstrap, topic, PARTITIONS)
                produce_changes(broker.bootstrap, topic, keys, args.changes, shape, by_fields)
                log = Path(tmp) / f"{topic}.log"
                result = run_job(broker.bootstrap, topic, root, log, by_fields)
                result.update(
                    keys=keys, shape=shape, key=args.key, changes=args.changes, load_s=loaded
                )
                result["changes_per_s"] = args.changes / result["steady_s"]
                results.append(result)
                print(json.dumps(result), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(
        "\n| N keys | shape | changes/s | commit p50 ms | commit p99 ms | commits | CPU s | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['keys']:,} | {r['shape']} | {r['changes_per_s']:,.0f} | {r['commit_p50_ms']} | "
            f"{r['commit_p99_ms']} | {r['commits']} | {r['cpu_s']:.0f} | {r['peak_rss_mb']:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
