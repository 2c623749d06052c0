"""Peer B of the ingest benchmark: Kafka -> Delta the way a quixstreams user would write it.

A quixstreams `Application` with a consumer group, a `StreamingDataFrame` over the topic and a
`BatchingSink` subclass whose `write()` appends each batch (one per topic partition and
checkpoint) with `write_deltalake`. quixstreams 3.28.1 pins an older confluent-kafka, so this runs
in its own virtual environment (bench_ingest.py creates tests/benchmarks/.venv-quix):

    .venv-quix/bin/python peer_quix_app.py --bootstrap H:P --topic T --table DIR --count N

The timing lines are the benchmark's, not part of what a user would write.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from deltalake import write_deltalake
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch

SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("key", pa.binary()),
        ("value", pa.binary()),
    ]
)


class DeltaSink(BatchingSink):  # type: ignore[misc]  # quixstreams is not in the project venv
    def __init__(self, uri: str) -> None:
        super().__init__()
        self.uri = uri
        # Benchmark timings.
        self.first_record: float | None = None
        self.last_commit: float | None = None
        self.records = 0
        self.commit_ms: list[float] = []

    def add(self, *args: Any, **kwargs: Any) -> None:
        if self.first_record is None:
            self.first_record = time.time()
        super().add(*args, **kwargs)

    def write(self, batch: SinkBatch) -> None:
        started = time.time()
        rows = list(batch)
        table = pa.table(
            {
                "topic": [batch.topic] * len(rows),
                "partition": [batch.partition] * len(rows),
                "offset": [item.offset for item in rows],
                "timestamp": [item.timestamp for item in rows],
                "key": [item.key for item in rows],
                "value": [item.value for item in rows],
            },
            schema=SCHEMA,
        )
        write_deltalake(self.uri, table, mode="append")
        ended = time.time()
        self.last_commit = ended
        self.records += len(rows)
        self.commit_ms.append((ended - started) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--count", type=int, default=0, help="stop after N records (0: run on)")
    parser.add_argument("--timeout", type=float, default=0.0)
    parser.add_argument("--commit-interval", type=float, default=5.0)
    parser.add_argument("--report")
    args = parser.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        state_dir=args.state_dir,
        # The local test broker (Tansu) assigns a group promptly only with a short session.
        consumer_extra_config={"session.timeout.ms": 10000},
    )
    topic = app.topic(args.topic, key_deserializer="bytes", value_deserializer="bytes")
    sdf = app.dataframe(topic)
    sink = DeltaSink(args.table)
    sdf.sink(sink)
    app.run(count=args.count, timeout=args.timeout, collect=False)

    if args.report:
        with open(args.report, "w") as f:
            json.dump(
                {
                    "first_record": sink.first_record,
                    "last_commit": sink.last_commit,
                    "records": sink.records,
                    "commit_ms": sink.commit_ms,
                    "finished": datetime.now(UTC).isoformat(),
                },
                f,
            )


if __name__ == "__main__":
    main()
