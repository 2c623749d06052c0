"""Peer A of the ingest benchmark: Kafka -> Delta the way a Bytewax user would write it.

Bytewax's built-in `KafkaSource`, a per-record `map` to dicts, and a stateless sink that calls
`write_deltalake` once per batch it is handed. Run by bench_ingest.py as

    python -m bytewax.run tests.benchmarks.peer_bytewax_flow:flow

with BENCH_BOOTSTRAP, BENCH_TOPIC, BENCH_TABLE, BENCH_TAIL (0: stop at the end of each
partition) and BENCH_REPORT (a JSON file for the benchmark's timings) in the environment.
The timing lines are the benchmark's, not part of what a user would write.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, cast

import bytewax.operators as op
import pyarrow as pa
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from deltalake import write_deltalake

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


Message = KafkaSourceMessage[bytes | None, bytes | None]


def to_row(msg: Message) -> dict[str, Any]:
    return {
        "topic": msg.topic,
        "partition": msg.partition,
        "offset": msg.offset,
        "timestamp": msg.timestamp[1] if msg.timestamp else None,
        "key": msg.key,
        "value": msg.value,
    }


class _Timings:
    """What the benchmark needs to know: first records, each write, when the last one ended."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.first_record: float | None = None
        self.last_commit: float | None = None
        self.records = 0
        self.commit_ms: list[float] = []

    def save(self) -> None:
        if self.path:
            with open(self.path, "w") as f:
                json.dump(
                    {
                        "first_record": self.first_record,
                        "last_commit": self.last_commit,
                        "records": self.records,
                        "commit_ms": self.commit_ms,
                    },
                    f,
                )


class DeltaPartition(StatelessSinkPartition[dict[str, Any]]):
    def __init__(self, uri: str, timings: _Timings) -> None:
        self._uri = uri
        self._timings = timings

    def write_batch(self, items: list[dict[str, Any]]) -> None:
        started = time.time()
        if self._timings.first_record is None:
            self._timings.first_record = started
        table = pa.Table.from_pylist(items, schema=SCHEMA)
        write_deltalake(self._uri, table, mode="append")
        ended = time.time()
        self._timings.last_commit = ended
        self._timings.records += len(items)
        self._timings.commit_ms.append((ended - started) * 1000)

    def close(self) -> None:
        self._timings.save()


class DeltaSink(DynamicSink[dict[str, Any]]):
    def __init__(self, uri: str, timings: _Timings) -> None:
        self._uri = uri
        self._timings = timings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> DeltaPartition:
        return DeltaPartition(self._uri, self._timings)


def build_flow() -> Dataflow:
    brokers = os.environ["BENCH_BOOTSTRAP"].split(",")
    topic = os.environ["BENCH_TOPIC"]
    tail = os.environ.get("BENCH_TAIL", "0") == "1"
    timings = _Timings(os.environ.get("BENCH_REPORT"))

    flow = Dataflow("peer_bytewax")
    # raise_on_errors=True (the default): a Kafka error raises, none flows as an item.
    messages = cast(
        Stream[Message], op.input("kafka", flow, KafkaSource(brokers, [topic], tail=tail))
    )
    rows = op.map("to_row", messages, to_row)
    op.output("delta", rows, DeltaSink(os.environ["BENCH_TABLE"], timings))
    return flow


flow = build_flow()
