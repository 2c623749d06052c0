"""The Kafka consumer group's committed offsets: what standard lag tools read, and the position of
record for at-least-once and at-most-once (exactly-once keeps its own in the table)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

log = logging.getLogger(__name__)
T = TypeVar("T")

_COORDINATOR_BUSY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}
_ATTEMPTS = 8


def _while_coordinator_moves(what: str, call: Callable[[], T]) -> T:
    """`call()`, again while the group's coordinator is moving or loading (a broker that just
    started, a leader election): librdkafka's `committed()` reports that instead of waiting."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not isinstance(error, KafkaError) or error.code() not in _COORDINATOR_BUSY:
                raise
            if attempt == _ATTEMPTS:
                raise
            log.info("%s: %s; trying again", what, error.str())
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def group_offsets(
    consumer: Consumer, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, str]]:
    """The group's committed (next offset, metadata) per (topic, partition), where it has one;
    one request for all of them."""
    wanted = [TopicPartition(topic, p) for topic, p in partitions]
    if not wanted:
        return {}
    committed = _while_coordinator_moves(
        "reading the group's offsets", lambda: consumer.committed(wanted, timeout=30)
    )
    return {
        (tp.topic, tp.partition): (tp.offset, tp.metadata or "")
        for tp in committed
        if tp.offset >= 0
    }


def commit_group_offsets(
    consumer: Consumer, topic: str, next_offsets: Mapping[int, int], metadata: str = ""
) -> None:
    """Synchronously commit `next_offsets` (partition -> next offset to read) for the group,
    each with `metadata` (what the offsets belong to)."""
    if not next_offsets:
        return

    def commit() -> None:
        result = consumer.commit(
            offsets=[
                TopicPartition(topic, p, o, metadata=metadata) for p, o in next_offsets.items()
            ],
            asynchronous=False,
        )
        for tp in result or []:
            if tp.error is not None:
                raise KafkaException(tp.error)

    _while_coordinator_moves("committing the group's offsets", commit)
