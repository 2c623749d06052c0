"""What Kafka itself does to a log, done on purpose by the tests: retention, recreation, growth."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions

from connectors.local_broker import create_topic


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "waxlake-test-watermarks"})
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=10, cached=False
        )
        return int(low), int(high)
    finally:
        consumer.close()


def delete_records(bootstrap: str, topic: str, before: dict[int, int]) -> None:
    """Delete every record below `before[partition]`, as retention does; wait until the log
    start offset shows it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = [TopicPartition(topic, p, o) for p, o in before.items()]
    for future in admin.delete_records(wanted, operation_timeout=10).values():
        future.result(timeout=20)
    deadline = time.monotonic() + 20
    while any(watermarks(bootstrap, topic, p)[0] < o for p, o in before.items()):
        assert time.monotonic() < deadline, "log start offset did not move"
        time.sleep(0.05)


def recreate_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Delete `topic` and create it again under the same name (offsets start at 0 again)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic], operation_timeout=10)[topic].result(timeout=20)
    deadline = time.monotonic() + 30
    while True:
        try:
            create_topic(bootstrap, topic, partitions)
            return
        except Exception:  # still being deleted
            assert time.monotonic() < deadline, f"topic {topic} could not be recreated"
            time.sleep(0.2)


def add_partitions(bootstrap: str, topic: str, total: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_partitions([NewPartitions(topic, total)])[topic].result(timeout=20)
    deadline = time.monotonic() + 20
    while len(admin.list_topics(topic=topic, timeout=5).topics[topic].partitions) < total:
        assert time.monotonic() < deadline, "new partitions never showed up"
        time.sleep(0.05)
