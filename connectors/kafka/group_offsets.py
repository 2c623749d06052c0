"""The Kafka consumer group's committed offsets: what standard lag tools read, and the position of
record for at-least-once and at-most-once (exactly-once keeps its own in the table)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition


def group_offsets(
    consumer: Consumer, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The group's committed next offset per (topic, partition), where it has one; one request
    for all of them."""
    wanted = [TopicPartition(topic, p) for topic, p in partitions]
    if not wanted:
        return {}
    committed = consumer.committed(wanted, timeout=30)
    return {(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset >= 0}


def commit_group_offsets(consumer: Consumer, topic: str, next_offsets: Mapping[int, int]) -> None:
    """Synchronously commit `next_offsets` (partition -> next offset to read) for the group."""
    if not next_offsets:
        return
    result = consumer.commit(
        offsets=[TopicPartition(topic, p, o) for p, o in next_offsets.items()],
        asynchronous=False,
    )
    for tp in result or []:
        if tp.error is not None:
            raise KafkaException(tp.error)
