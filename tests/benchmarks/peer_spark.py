"""Peer C of the ingest benchmark: Kafka -> Delta with Spark Structured Streaming and its Delta sink.

The query a Spark user would write: the Kafka source (subscribe, earliest offsets, headers
included), the record columns selected, `writeStream.format("delta")` with a checkpoint location,
`trigger(availableNow=True)` so the run is bounded by the offsets that exist at its start, on
`local[2]`. Runs in its own virtual environment with the connector jars passed as `spark.jars`
(bench_ingest.py prepares both, see spark_setup.py):

    .venv-spark/bin/python peer_spark.py --bootstrap H:P --topic T --table DIR \\
        --checkpoint DIR --jars A.jar,B.jar --report F

Spark gives no per-record hook, so the benchmark's timings come from what it records anyway:
"first record" is the start of the first batch's `addBatch` phase (the batch's trigger time plus
the durations of the phases before it: latestOffset, walCommit, getBatch, queryPlanning), and
"last commit" is when the last Delta log entry was written (its file's mtime). The commit
latencies are each batch's `durationMs.addBatch`, which covers the Kafka read, the Parquet writes
and the Delta commit of that batch. At the end the driver JVM is stopped and waited for, so the
parent's wait4() counts its CPU time (its RSS is sampled over the process tree by the benchmark).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.functions import col, count_distinct, struct

BEFORE_ADD_BATCH = ("latestOffset", "walCommit", "getBatch", "queryPlanning")


def build_session(jars: str, master: str, driver_memory: str | None) -> Any:
    builder = (
        SparkSession.builder.master(master)
        .appName("waxlake-bench-spark-peer")
        .config("spark.jars", jars)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.streaming.numRecentProgressUpdates", "100000")
    )
    if driver_memory:
        builder = builder.config("spark.driver.memory", driver_memory)
    return builder.getOrCreate()


def run_query(spark: Any, args: argparse.Namespace) -> Any:
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap)
        .option("subscribe", args.topic)
        .option("startingOffsets", "earliest")
        .option("includeHeaders", "true")
    )
    if args.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(args.max_offsets_per_trigger))
    records = reader.load().select(
        "key", "value", "topic", "partition", "offset", "timestamp", "headers"
    )
    query = (
        records.writeStream.format("delta")
        .outputMode("append")
        .option("checkpointLocation", args.checkpoint)
        .trigger(availableNow=True)
        .start(args.table)
    )
    query.awaitTermination()
    return query


def _epoch_s(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def timings(progress: list[dict[str, Any]], table: str) -> dict[str, Any]:
    """First record, last commit, records and per-batch addBatch ms from the query progress."""
    batches = [p for p in progress if p.get("numInputRows", 0) > 0]
    first = None
    if batches:
        durations = batches[0].get("durationMs", {})
        first = (
            _epoch_s(batches[0]["timestamp"])
            + sum(durations.get(k, 0) for k in BEFORE_ADD_BATCH) / 1000
        )
    log = sorted(Path(table, "_delta_log").glob("*.json"))
    return {
        "first_record": first,
        "last_commit": log[-1].stat().st_mtime if log else None,
        "records": sum(p.get("numInputRows", 0) for p in progress),
        "commit_ms": [
            p["durationMs"]["addBatch"] for p in batches if "addBatch" in p["durationMs"]
        ],
        "batches": len(batches),
        "delta_versions": len(log),
    }


def verify(spark: Any, table: str) -> dict[str, int]:
    """Rows and distinct (partition, offset) in the table, read back with Spark."""
    row = (
        spark.read.format("delta")
        .load(table)
        .agg(count_distinct(struct(col("partition"), col("offset"))).alias("unique"))
        .collect()[0]
    )
    rows = spark.read.format("delta").load(table).count()
    return {"rows": rows, "unique": int(row["unique"])}


def stop_jvm(spark: Any) -> None:
    """Stop Spark and wait for the driver JVM, so that its usage lands in our rusage."""
    gateway = spark.sparkContext._gateway
    spark.stop()
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    if proc is not None:
        proc.stdin.close()  # the JVM exits when its stdin closes
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--jars", required=True, help="comma-separated local jar paths")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory")
    parser.add_argument("--max-offsets-per-trigger", type=int, default=0, help="0: Spark's default")
    parser.add_argument("--verify", action="store_true", help="count rows and distinct offsets")
    parser.add_argument("--report")
    args = parser.parse_args()

    started = time.time()
    spark = build_session(args.jars, args.master, args.driver_memory)
    spark.sparkContext.setLogLevel("WARN")
    query = run_query(spark, args)
    progress = [json.loads(p.json) for p in query.recentProgress]
    report: dict[str, Any] = {
        "started": started,
        **timings(progress, args.table),
        "exception": str(query.exception()) if query.exception() else None,
    }
    if args.verify:
        report["verify"] = verify(spark, args.table)
    stop_jvm(spark)
    report["finished"] = datetime.now(UTC).isoformat()
    report["progress"] = progress
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f)
    summary = {k: v for k, v in report.items() if k != "progress"}
    print(json.dumps(summary), flush=True)
    sys.exit(1 if report["exception"] else 0)


if __name__ == "__main__":
    main()
