"""waxlake's Bytewax source: one partition per (topic, Kafka partition), one Arrow batch per poll."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from connectors import metrics, offsets
from connectors.config import Guarantee, Settings
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


class KafkaPartitionReader(StatefulSourcePartition[pa.RecordBatch, int | None]):
    """Reads one Kafka partition with `assign()`; its resume state is the next offset to read."""

    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        topic: str,
        partition: int,
        start: int | None,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._max_records = settings.max_poll_records
        self._stop_at_end = settings.stop_at_end
        self._next_offset = start
        self._at_end = False
        self._awake: datetime | None = None
        self._consumer = consumer
        self._consumer.assign(
            [TopicPartition(topic, partition, OFFSET_BEGINNING if start is None else start)]
        )
        self._watermark_tp = TopicPartition(topic, partition)
        self._records_read = metrics.RECORDS_READ.labels(topic)
        self._bytes_read = metrics.BYTES_READ.labels(topic)
        if start is not None:
            metrics.LAG.set_committed(topic, partition, start - 1)
        if settings.stop_at_end:
            low, high = self._consumer.get_watermark_offsets(self._watermark_tp, timeout=10)
            PROGRESS.add_to_read(high - (low if start is None else max(start, low)))
        log.info(
            "reading %s[%d] from offset %s",
            topic,
            partition,
            start if start is not None else "earliest",
        )

    def next_batch(self) -> list[pa.RecordBatch]:
        if self._at_end or STOP.is_set():
            raise StopIteration
        messages = self._consumer.consume(self._max_records, 0)
        if not messages:
            self._awake = datetime.now(UTC) + _IDLE_BACKOFF
            return []
        self._awake = None
        data = [m for m in messages if m.error() is None]
        if len(data) != len(messages):
            self._check_errors(messages)
        if not data:
            return []
        last = data[-1].offset()
        assert last is not None  # data messages always carry an offset
        self._next_offset = last + 1
        batch = messages_to_batch(self._topic, self._partition, data)
        self._records_read.inc(batch.num_rows)
        self._bytes_read.inc(batch.nbytes)
        _, high = self._consumer.get_watermark_offsets(self._watermark_tp, cached=True)
        metrics.LAG.set_end(self._topic, self._partition, max(high, self._next_offset))
        return [batch]

    def _check_errors(self, messages: list[Message]) -> None:
        for message in messages:
            error = message.error()
            if error is None:
                continue
            if error.code() == KafkaError._PARTITION_EOF:
                if self._stop_at_end:
                    self._at_end = True
                continue
            where = f"topic {self._topic} partition {self._partition}"
            if error.fatal() or not (error.retriable() or error.code() in _TRANSIENT):
                raise RuntimeError(f"fatal Kafka error reading {where}: {error.str()}")
            log.warning("Kafka error reading %s (retrying): %s", where, error.str())

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
            **{"enable.partition.eof": settings.stop_at_end},
        )
        start = offsets.start_offset(
            settings.guarantee,
            table_marker=self._table_marker(topic, partition),
            resume_state=resume_state,
            group_offset=self._group_offset(consumer, topic, partition),
        )
        return KafkaPartitionReader(settings, consumer, topic, partition, start)

    def _table_marker(self, topic: str, partition: int) -> int | None:
        if self._settings.guarantee is not Guarantee.EXACTLY_ONCE:
            return None
        table = offsets.open_table(self._settings.table_uri(topic), self._settings.storage_options)
        if table is None:
            return None
        return offsets.table_markers(table, topic, [partition]).get(partition)

    def _group_offset(self, consumer: Consumer, topic: str, partition: int) -> int | None:
        """The group's committed offset, read with the partition's own consumer (same group)."""
        if self._settings.guarantee is Guarantee.EXACTLY_ONCE:
            return None
        return offsets.group_offsets(consumer, topic, [partition]).get(partition)
