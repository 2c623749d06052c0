"""The floor of the ingest benchmark: read key, value and offset of every record, nothing else.

confluent-kafka `assign()` of every partition from the beginning and `consume()` in batches until
each partition reports its end. Run by bench_ingest.py in its own process:

    python tests/benchmarks/bench_raw.py --bootstrap H:P --topic T --partitions P --report F
"""

from __future__ import annotations

import argparse
import json
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": "bench-raw",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign(
        [TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(args.partitions)]
    )
    open_parts = set(range(args.partitions))
    first: float | None = None
    count = 0
    while open_parts:
        for msg in consumer.consume(10_000, 1.0):
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(msg.partition())
                    continue
                raise RuntimeError(error.str())
            if first is None:
                first = time.time()
            msg.key()
            msg.value()
            msg.offset()
            count += 1
    last = time.time()
    consumer.close()
    with open(args.report, "w") as f:
        json.dump({"first_record": first, "last_commit": last, "records": count}, f)


if __name__ == "__main__":
    main()
