"""Reads one Kafka partition into `KafkaBatch`es: a poll at a time, with the data-loss checks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from bytewax.inputs import StatefulSourcePartition
from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from connectors.batch import KafkaBatch
from connectors.config import Settings
from connectors.delta.dead_letters import Split, reject_oversized
from connectors.errors import KafkaFatalError
from connectors.kafka.data_loss import PartitionGuard
from connectors.kafka.records import SCHEMA, messages_to_batch
from connectors.ops import metrics
from connectors.ops.progress import PROGRESS
from connectors.ops.shutdown import STOP

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


@dataclass(frozen=True)
class StartPosition:
    """Where a partition's reader starts: `next_offset`. `landed` (offset, Kafka timestamp): the
    last record that landed in the table, read again to check it is still that record."""

    next_offset: int
    landed: tuple[int, int] | None = None
    marker: int | None = None  # everything up to it has landed (exactly-once)


class KafkaPartitionReader(StatefulSourcePartition[KafkaBatch, int | None]):
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
        self._max_record_bytes = settings.max_record_bytes
        self._stop_at_end = settings.stop_at_end
        self._next_offset = start.next_offset
        self._landed = start.landed
        self._landed_through = -1 if start.marker is None else start.marker
        self._guard = guard
        self._at_end = False
        self._awake: datetime | None = None
        self._consumer = consumer
        self._watermark_tp = TopicPartition(topic, partition)
        first = start.next_offset
        if start.landed is not None:
            first = min(first, start.landed[0])
        self._assign(first)
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

    def next_batch(self) -> list[KafkaBatch]:
        if self._at_end or STOP.is_set():
            raise StopIteration
        messages = self._consumer.consume(self._max_records, 0)
        if not messages:
            self._awake = datetime.now(UTC) + _IDLE_BACKOFF
            return []
        self._awake = None
        data = [m for m in messages if m.error() is None]
        if self._landed is not None and data:
            self._check_landed(data)
        if data and (data[0].offset() or 0) < self._next_offset:  # re-read to check, not land
            data = [m for m in data if (m.offset() or 0) >= self._next_offset]
        out = [self._to_batch(data)] if data else []
        if len(data) != len(messages):
            covered = self._check_errors(messages)
            if covered is not None:
                out.append(covered)
        return out

    def _check_landed(self, data: list[Message]) -> None:
        """When the last landed record comes by (unless compacted away), compare it."""
        offset, landed_ms = self._landed or (-1, -1)
        last = data[-1].offset()
        assert last is not None
        if last < offset:
            return
        self._landed = None
        for message in data:
            if message.offset() == offset:
                self._guard.check_fingerprint(offset, landed_ms, message.timestamp()[1])

    def _to_batch(self, data: list[Message]) -> KafkaBatch:
        first, last = data[0].offset(), data[-1].offset()
        assert first is not None and last is not None  # data messages carry offsets
        self._next_offset = last + 1
        records = pa.Table.from_batches([messages_to_batch(self._topic, self._partition, data)])
        self._records_read.inc(records.num_rows)
        self._bytes_read.inc(records.nbytes)
        _, high = self._consumer.get_watermark_offsets(self._watermark_tp, cached=True)
        metrics.LAG.set_end(self._topic, self._partition, max(high, self._next_offset))
        split = Split(rows=records)
        rows = reject_oversized(split, records, self._max_record_bytes)
        dead = split.dead_table() if split.dead else None
        return KafkaBatch(self._topic, self._partition, first, last, rows, records, dead)

    def _covered_to(self, end: int) -> KafkaBatch | None:
        """The partition ends at `end`: offsets before it with no record (transaction markers)
        are covered too, so the group offset reaches the end (lag 0 in Kafka's tools)."""
        if end <= self._next_offset:
            return None
        empty = SCHEMA.empty_table()
        batch = KafkaBatch(self._topic, self._partition, self._next_offset, end - 1, empty, empty)
        self._next_offset = end
        return batch

    def _check_errors(self, messages: list[Message]) -> KafkaBatch | None:
        """Handle the error messages of a poll; a batch covering offsets up to the partition's
        end when it reports one."""
        covered = None
        for message in messages:
            error = message.error()
            if error is None:
                continue
            if error.code() == KafkaError._PARTITION_EOF:
                end = message.offset()
                if self._landed is not None and end is not None and end <= self._landed[0]:
                    # The record at the marker, which landed, is past the log's end now.
                    raise self._guard.reused(self._landed[0] + 1, end)
                if end is not None:
                    covered = self._covered_to(end)
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
        return covered

    def _out_of_range(self, message: Message) -> None:
        """librdkafka could not fetch our position (`auto.offset.reset=error`): decide."""
        self._landed = None  # the marker's record is gone; what matters is the next offset
        needed = max(self._next_offset, self._landed_through + 1)  # not yet landed anywhere
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
