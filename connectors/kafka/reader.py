"""Reads one Kafka partition into `KafkaBatch`es: a poll at a time, with the data-loss checks.

The partition's messages come from the consumer its worker shares (`SharedConsumer`); its start
position is worked out with the worker's other partitions (`connectors.kafka.starts`) when the
worker first reads, so building a thousand readers costs no broker round trips.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa
from bytewax.inputs import StatefulSourcePartition
from confluent_kafka import KafkaError, Message, TopicPartition

from connectors.batch import KafkaBatch
from connectors.config import Settings
from connectors.delta.dead_letters import Split, reject_oversized
from connectors.kafka.data_loss import PartitionGuard
from connectors.kafka.records import SCHEMA, messages_to_batch
from connectors.kafka.shared_consumer import SharedConsumer, fail_or_warn
from connectors.kafka.starts import StartPosition
from connectors.ops import metrics
from connectors.ops.shutdown import STOP

log = logging.getLogger(__name__)


class KafkaPartitionReader(StatefulSourcePartition[KafkaBatch, int | None]):
    """Reads one Kafka partition; its resume state is the next offset to read.

    `start_all()` starts this reader and the others of its worker that wait (see `begin`)."""

    def __init__(
        self,
        settings: Settings,
        shared: SharedConsumer,
        topic: str,
        partition: int,
        resume_state: int | None,
        guard: PartitionGuard,
        start_all: Callable[[], None],
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._key = (topic, partition)
        self._max_record_bytes = settings.max_record_bytes
        self._stop_at_end = settings.stop_at_end
        self._next_offset = resume_state  # until it starts: what it would resume from
        self._landed: tuple[int, int] | None = None
        self._landed_through = -1
        self._guard = guard
        self._started = False
        self._at_end = False
        self._empty_polls = 0
        self._awake: datetime | None = None
        self._shared = shared
        self._start_all = start_all
        self._watermark_tp = TopicPartition(topic, partition)
        self._records_read = metrics.RECORDS_READ.labels(topic)
        self._bytes_read = metrics.BYTES_READ.labels(topic)
        metrics.RECORDS_LOST.labels(topic, str(partition))
        shared.join()

    @property
    def key(self) -> tuple[str, int]:
        return self._key

    @property
    def waiting(self) -> bool:
        """Built, not started yet: `resume_state` is what Bytewax gave it."""
        return not self._started

    @property
    def resume_state(self) -> int | None:
        return self._next_offset

    def begin(self, start: StartPosition) -> int:
        """Take the start position; return the offset to fetch from (the last landed record
        first, when there is one to check)."""
        self._started = True
        self._next_offset = start.next_offset
        self._landed = start.landed
        self._landed_through = -1 if start.marker is None else start.marker
        metrics.LAG.set_committed(self._topic, self._partition, start.next_offset - 1)
        metrics.LAG.set_end(self._topic, self._partition, start.next_offset)  # at least there
        log.info("reading %s[%d] from offset %d", self._topic, self._partition, start.next_offset)
        if start.landed is not None:
            return min(start.next_offset, start.landed[0])
        return start.next_offset

    def next_batch(self) -> list[KafkaBatch]:
        if self._at_end or STOP.is_set():
            self._shared.unassign(self._key)
            raise StopIteration
        if not self._started:
            self._start_all()
        messages = self._shared.take(self._key)
        if not messages:
            # Back off further only while the whole consumer has nothing to fetch.
            self._empty_polls = self._empty_polls + 1 if self._shared.idle else 0
            delay = self._shared.idle_delay(self._empty_polls)
            self._awake = datetime.now(UTC) + delay if delay else None
            if self._empty_polls == 1:  # an idle partition's lag shows too (the lag alert)
                self._note_end()
            return []
        self._empty_polls = 0
        self._awake = None
        data = [m for m in messages if m.error() is None]
        if self._landed is not None and data:
            self._check_landed(data)
        start = self._position
        if data and (data[0].offset() or 0) < start:  # re-read to check, not land
            data = [m for m in data if (m.offset() or 0) >= start]
        out = [self._to_batch(data)] if data else []
        if len(data) != len(messages):
            covered = self._check_errors(messages)
            if covered is not None:
                out.append(covered)
        return out

    @property
    def _position(self) -> int:
        assert self._next_offset is not None  # set by begin()
        return self._next_offset

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
                _, end = self._shared.consumer.get_watermark_offsets(
                    self._watermark_tp, cached=True
                )
                self._guard.check_fingerprint(offset, landed_ms, message.timestamp()[1], end)

    def _to_batch(self, data: list[Message]) -> KafkaBatch:
        first, last = data[0].offset(), data[-1].offset()
        assert first is not None and last is not None  # data messages carry offsets
        self._next_offset = last + 1
        records = pa.Table.from_batches([messages_to_batch(self._topic, self._partition, data)])
        self._records_read.inc(records.num_rows)
        self._bytes_read.inc(records.nbytes)
        self._note_end()
        split = Split(rows=records)
        rows = reject_oversized(split, records, self._max_record_bytes)
        dead = split.dead_table() if split.dead else None
        return KafkaBatch(self._topic, self._partition, first, last, rows, records, dead)

    def _note_end(self) -> None:
        """The partition's end for the lag metrics: librdkafka's last known high watermark."""
        consumer = self._shared.consumer
        _, high = consumer.get_watermark_offsets(self._watermark_tp, cached=True)
        metrics.LAG.set_end(self._topic, self._partition, max(high, self._position))

    def _covered_to(self, end: int) -> KafkaBatch | None:
        """The partition ends at `end`: offsets before it with no record (transaction markers)
        are covered too, so the group offset reaches the end (lag 0 in Kafka's tools)."""
        start = self._position
        if end <= start:
            return None
        empty = SCHEMA.empty_table()
        batch = KafkaBatch(self._topic, self._partition, start, end - 1, empty, empty)
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
                    raise self._guard.reused(self._landed[0] + 1, end, self._landed_through)
                if end is not None:
                    covered = self._covered_to(end)
                if self._stop_at_end:
                    self._at_end = True
                continue
            if error.code() == KafkaError._AUTO_OFFSET_RESET:
                self._out_of_range()
                continue
            fail_or_warn(error, f"topic {self._topic} partition {self._partition}")
        return covered

    def _out_of_range(self) -> None:
        """librdkafka could not fetch our position (`auto.offset.reset=error`): decide."""
        self._landed = None  # the marker's record is gone; what matters is the next offset
        needed = max(self._position, self._landed_through + 1)  # not yet landed anywhere
        low, high = self._shared.consumer.get_watermark_offsets(
            self._watermark_tp, timeout=10, cached=False
        )
        resume = self._guard.out_of_range(needed, low, high, self._landed_through)
        self._next_offset = resume
        self._shared.seek(self._key, resume)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int | None:
        return self._next_offset

    def close(self) -> None:
        """Never raises: Bytewax closes partitions while it unwinds from an error, and a second
        one there aborts the process. Nothing depends on it (the sink commits the offsets)."""
        try:
            self._shared.leave(self._key)
        except Exception as exc:
            log.warning("closing the consumer of %s[%d] failed: %s", *self._key, exc)
