"""The floor of the ingest benchmark: read key, value and offset of every record, nothing else.

A raw confluent-kafka read with the job's own fetch parallelism: one consumer per partition,
each `assign()`ed its partition from the beginning, polled in turn from one thread with
`consume(10_000, 0)`, and a partition that had nothing left alone for 20 ms, as the job's
source does (connectors/kafka/reader.py; Bytewax polls a worker's partitions in turn). With
`--shared`, the old, weaker floor: one consumer for all partitions, `consume(10_000, 1.0)`.
Each stops at every partition's end (partition EOF). Run by bench_ingest.py in its own process:

    python tests/benchmarks/bench_raw.py --bootstrap H:P --topic T --partitions P --report F
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

MAX_RECORDS = 10_000  # the job's WAXLAKE_MAX_POLL_RECORDS default
IDLE_S = 0.02  # the job's backoff for a partition that returned nothing


class Counter:
    """Reads key, value and offset of each record; notes when the first one came."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.count = 0

    def read(self, messages: Sequence[Message]) -> set[int]:
        """Count the records; the partitions that reported their end."""
        ended: set[int] = set()
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ended.add(msg.partition() or 0)  # never None here
                    continue
                raise RuntimeError(error.str())
            if self.first is None:
                self.first = time.time()
            msg.key()
            msg.value()
            msg.offset()
            self.count += 1
        return ended


def _config(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": "bench-raw",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    }


def per_partition(bootstrap: str, topic: str, partitions: int, counter: Counter) -> list[Consumer]:
    consumers: dict[int, Consumer] = {}
    for p in range(partitions):
        consumer = Consumer(_config(bootstrap))
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)])
        consumers[p] = consumer
    awake = dict.fromkeys(consumers, 0.0)
    while awake:
        now = time.monotonic()
        due = [p for p, at in awake.items() if at <= now]
        if not due:
            time.sleep(min(awake.values()) - now)
            continue
        for p in due:
            messages = consumers[p].consume(MAX_RECORDS, 0)
            if not messages:
                awake[p] = time.monotonic() + IDLE_S
            elif p in counter.read(messages):
                del awake[p]
    return list(consumers.values())


def shared(bootstrap: str, topic: str, partitions: int, counter: Counter) -> list[Consumer]:
    consumer = Consumer(_config(bootstrap))
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    open_parts = set(range(partitions))
    while open_parts:
        open_parts -= counter.read(consumer.consume(MAX_RECORDS, 1.0))
    return [consumer]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--shared", action="store_true", help="one consumer for all partitions")
    args = parser.parse_args()
    counter = Counter()
    read = shared if args.shared else per_partition
    consumers = read(args.bootstrap, args.topic, args.partitions, counter)
    last = time.time()
    for consumer in consumers:
        consumer.close()
    with open(args.report, "w") as f:
        json.dump({"first_record": counter.first, "last_commit": last, "records": counter.count}, f)


if __name__ == "__main__":
    main()
