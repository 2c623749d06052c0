"""waxlake's Bytewax source: one partition per (topic, Kafka partition), one Arrow batch per poll."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)
from deltalake import DeltaTable

from connectors import metrics, offsets
from connectors.config import Guarantee, Settings
from connectors.data_loss import PartitionGuard
from connectors.errors import KafkaFatalError
from connectors.kafka import list_partitions, make_consumer
from connectors.progress import PROGRESS
from connectors.records import messages_to_batch
from connectors.shutdown import STOP

log = logging.getLogger(__name__)

_IDLE_BACKOFF = timedelta(milliseconds=20)

# Errors that describe the state of the fetch, not a broken job: librdkafka keeps retrying.
_TRANSIENT = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._RESOLVE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
}


def part_key(topic: str, partition: int) -> str:
    """Bytewax partition key of one Kafka partition (its resume state is stored under it)."""
    return f"{topic}#{partition}"


def parse_part_key(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition("#")
    return topic, int(partition)


@dataclass(frozen=True)
class StartPosition:
    """Where a partition's reader starts: `next_offset`. `landed` (offset, Kafka timestamp): the
    record at the table's marker, read again first to check it is still the record that landed."""

    next_offset: int
    landed: tuple[int, int] | None = None


class KafkaPartitionReader(StatefulSourcePartition[pa.RecordBatch, int | None]):
    """Reads one Kafka partition with `assign()`; its resume state is the next offset to read."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        topic: str,
        partition: int,
        start: StartPosition,
        guard: PartitionGuard,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._max_records = settings.max_poll_records
        self._stop_at_end = settings.stop_at_end
        self._next_offset = start.next_offset
        self._landed = start.landed
        self._guard = guard
        self._at_end = False
        self._awake: datetime | None = None
        self._consumer = consumer
        self._watermark_tp = TopicPartition(topic, partition)
        self._assign(start.landed[0] if start.landed is not None else start.next_offset)
        self._records_read = metrics.RECORDS_READ.labels(topic)
        self._bytes_read = metrics.BYTES_READ.labels(topic)
        metrics.RECORDS_LOST.labels(topic, str(partition))
        metrics.LAG.set_committed(topic, partition, start.next_offset - 1)
        if settings.stop_at_end:
            low, high = self._consumer.get_watermark_offsets(self._watermark_tp, timeout=10)
            PROGRESS.add_to_read(high - max(start.next_offset, low))
        log.info("reading %s[%d] from offset %d", topic, partition, start.next_offset)

    def _assign(self, offset: int) -> None:
        self._consumer.assign([TopicPartition(self._topic, self._partition, offset)])

    def next_batch(self) -> list[pa.RecordBatch]:
        if self._at_end or STOP.is_set():
            raise StopIteration
        messages = self._consumer.consume(self._max_records, 0)
        if not messages:
            self._awake = datetime.now(UTC) + _IDLE_BACKOFF
            return []
        self._awake = None
        data = [m for m in messages if m.error() is None]
        if self._landed is not None and data:
            data = self._check_landed(data)
        batch = self._to_batch(data) if data else None
        if len(data) != len(messages):
            self._check_errors(messages)
        return [batch] if batch is not None else []

    def _check_landed(self, data: list[Message]) -> list[Message]:
        """The first record read is the one at the marker (unless compacted away): compare it."""
        offset, landed_ms = self._landed or (-1, -1)
        self._landed = None
        if data[0].offset() != offset:
            return data
        self._guard.check_fingerprint(offset, landed_ms, data[0].timestamp()[1])
        return data[1:]

    def _to_batch(self, data: list[Message]) -> pa.RecordBatch | None:
        if not data:
            return None
        last = data[-1].offset()
        assert last is not None  # data messages always carry an offset
        self._next_offset = last + 1
        batch = messages_to_batch(self._topic, self._partition, data)
        self._records_read.inc(batch.num_rows)
        self._bytes_read.inc(batch.nbytes)
        _, high = self._consumer.get_watermark_offsets(self._watermark_tp, cached=True)
        metrics.LAG.set_end(self._topic, self._partition, max(high, self._next_offset))
        return batch

    def _check_errors(self, messages: list[Message]) -> None:
        for message in messages:
            error = message.error()
            if error is None:
                continue
            if error.code() == KafkaError._PARTITION_EOF:
                end = message.offset()
                if self._landed is not None and end is not None and end <= self._landed[0]:
                    # The record at the marker, which landed, is past the log's end now.
                    raise self._guard.reused(self._landed[0] + 1, end)
                if self._stop_at_end:
                    self._at_end = True
                continue
            if error.code() == KafkaError._AUTO_OFFSET_RESET:
                self._out_of_range(message)
                continue
            where = f"topic {self._topic} partition {self._partition}"
            if error.fatal() or not (error.retriable() or error.code() in _TRANSIENT):
                raise KafkaFatalError(
                    f"{where}: Kafka error {error.name()}: {error.str()}; check the broker and "
                    "WAXLAKE_KAFKA_CONFIG (security, ACLs), then restart the job: nothing was "
                    "lost, it resumes from the committed offsets"
                )
            log.warning("Kafka error reading %s (retrying): %s", where, error.str())

    def _out_of_range(self, message: Message) -> None:
        """librdkafka could not fetch our position (`auto.offset.reset=error`): decide."""
        self._landed = None  # the marker's record is gone; what matters is the next offset
        needed = self._next_offset
        low, high = self._consumer.get_watermark_offsets(
            self._watermark_tp, timeout=10, cached=False
        )
        resume = self._guard.out_of_range(needed, low, high)
        self._next_offset = resume
        self._assign(resume)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int | None:
        return self._next_offset

    def close(self) -> None:
        self._consumer.close()


class KafkaSource(FixedPartitionedSource[pa.RecordBatch, int | None]):
    """All partitions of the configured topics; each worker lists them all, Bytewax assigns each
    to exactly one worker."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tables: dict[str, DeltaTable | None] = {}

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
            # End-of-partition events: where bounded runs stop, and how a log that now ends
            # before the table's marker shows (on brokers whose high watermark is unreliable).
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
        table = self._table(topic) if guarantee is Guarantee.EXACTLY_ONCE else None
        marker = None
        if table is not None:
            marker = offsets.table_markers(table, topic, [partition]).get(partition)
        group = None
        if guarantee is not Guarantee.EXACTLY_ONCE:
            group = offsets.group_offsets(consumer, topic, [partition]).get(partition)
        start = offsets.start_offset(
            guarantee, table_marker=marker, resume_state=resume_state, group_offset=group
        )
        if start is None:  # no position at all: the policy decides, once, durably
            return StartPosition(
                guard.origin(lambda: self._policy_offset(consumer, topic, partition))
            )
        if table is None or marker is None or marker < 0:
            return StartPosition(start)
        return StartPosition(start, (marker, offsets.table_fingerprint(table, topic, partition)))

    def _policy_offset(self, consumer: Consumer, topic: str, partition: int) -> int:
        """`auto.offset.reset` for a partition with no position: its log start or its end."""
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=10, cached=False
        )
        return int(high if self._settings.initial_offset() == "latest" else low)

    def _table(self, topic: str) -> DeltaTable | None:
        """The topic's table, opened once per worker (every partition of it needs its markers)."""
        if topic not in self._tables:
            settings = self._settings
            self._tables[topic] = offsets.open_table(
                settings.table_uri(topic), settings.storage_options
            )
        return self._tables[topic]
