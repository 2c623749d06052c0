"""waxlake's Bytewax source: one partition per (topic, Kafka partition), one batch per poll."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from bytewax.inputs import FixedPartitionedSource
from confluent_kafka import (
    Consumer,
    TopicPartition,
)
from deltalake import DeltaTable

from connectors import guarantees
from connectors.batch import KafkaBatch
from connectors.config import Guarantee, Settings
from connectors.delta import markers as offsets
from connectors.kafka import group_offsets
from connectors.kafka.client import list_partitions, make_consumer
from connectors.kafka.data_loss import PartitionGuard
from connectors.kafka.reader import KafkaPartitionReader, StartPosition

log = logging.getLogger(__name__)


def part_key(topic: str, partition: int) -> str:
    """Bytewax partition key of one Kafka partition (its resume state is stored under it)."""
    return f"{topic}#{partition}"


def parse_part_key(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition("#")
    return topic, int(partition)


class KafkaSource(FixedPartitionedSource[KafkaBatch, int | None]):
    """All partitions of the configured topics, one `KafkaBatch` per poll; each worker lists them
    all, Bytewax assigns each to exactly one worker.

    `tables`: per topic, the tables its records land in (default: one table named like the topic).
    Under exactly-once a partition resumes from its Bytewax resume state (consistent with every
    table and every stateful step), else after the lowest of its tables' markers.
    """

    def __init__(
        self, settings: Settings, tables: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self._settings = settings
        self._tables = {t: list((tables or {}).get(t, [t])) for t in settings.topics}
        self._opened: dict[str, DeltaTable | None] = {}

    def list_parts(self) -> list[str]:
        return [
            part_key(topic, partition)
            for topic, partitions in list_partitions(self._settings).items()
            for partition in partitions
        ]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> KafkaPartitionReader:
        topic, partition = parse_part_key(for_part)
        settings = self._settings
        consumer = make_consumer(
            settings,
            what=f"source {topic}[{partition}]",
            # End-of-partition events: where bounded runs stop, how offsets without records
            # (transaction markers) at the end are covered, and how a log that now ends before
            # the table's marker shows (on brokers whose high watermark is unreliable).
            **{"enable.partition.eof": True, "auto.offset.reset": "error"},
        )
        guard = PartitionGuard(settings, topic, partition)
        start = self._start(consumer, guard, topic, partition, resume_state)
        return KafkaPartitionReader(settings, consumer, topic, partition, start, guard)

    def _start(
        self,
        consumer: Consumer,
        guard: PartitionGuard,
        topic: str,
        partition: int,
        resume_state: int | None,
    ) -> StartPosition:
        guarantee = self._settings.guarantee
        marker, landed = None, None
        if guarantee is Guarantee.EXACTLY_ONCE:
            marker, landed = self._lowest_marker(topic, partition)
        group = None
        if guarantee is not Guarantee.EXACTLY_ONCE:
            group = group_offsets.group_offsets(consumer, topic, [partition]).get(partition)
        start = guarantees.start_offset(
            guarantee, table_marker=marker, resume_state=resume_state, group_offset=group
        )
        if start is None:  # no position at all: the policy decides, once, durably
            return StartPosition(
                guard.origin(lambda: self._policy_offset(consumer, topic, partition))
            )
        return StartPosition(start, landed, marker)

    def _lowest_marker(
        self, topic: str, partition: int
    ) -> tuple[int | None, tuple[int, int] | None]:
        """The lowest marker of the topic's tables that have one, and its last record read."""
        found = []
        for name in self._tables[topic]:
            table = self._table(name)
            if table is None:
                continue
            marker = offsets.table_markers(table, topic, [partition]).get(partition)
            if marker is not None:
                found.append((marker, offsets.table_fingerprint(table, topic, partition)))
        if not found:
            return None, None
        return min(found, key=lambda pair: pair[0])

    def _policy_offset(self, consumer: Consumer, topic: str, partition: int) -> int:
        """`auto.offset.reset` for a partition with no position: its log start or its end."""
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=10, cached=False
        )
        return int(high if self._settings.initial_offset() == "latest" else low)

    def _table(self, name: str) -> DeltaTable | None:
        """A table, opened once per worker (every partition of it needs its markers)."""
        if name not in self._opened:
            settings = self._settings
            self._opened[name] = offsets.open_table(
                settings.table_uri(name), settings.storage_options
            )
        return self._opened[name]
