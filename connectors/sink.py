"""waxlake's Bytewax sink: buffers Arrow batches per table, commits them at each epoch snapshot.

Committing in `snapshot()` means Bytewax's recovery state never runs ahead of what is durable in
the table. The order of table write and Kafka group commit is what the guarantee is made of:

- exactly-once: write (deduplicated against the table's `txn` markers), then commit the group;
- at-least-once: write (plain append), then commit the group;
- at-most-once: commit the group, then write (plain append).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import Consumer, KafkaException

from connectors import metrics, offsets
from connectors.config import Guarantee, Settings
from connectors.kafka import make_consumer
from connectors.progress import PROGRESS
from connectors.table_writer import DeltaTableWriter

log = logging.getLogger(__name__)

Item = tuple[str, pa.RecordBatch]
"""(table name, batch): a batch of one topic, keyed by the table it lands in."""


@dataclass
class _Buffer:
    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes

    def take(self) -> pa.Table:
        table = pa.Table.from_batches(self.batches)
        self.batches, self.rows, self.bytes = [], 0, 0
        return table


class TableSinkPartition(StatefulSinkPartition[pa.RecordBatch, None]):
    """Buffers and commits the batches routed to it (all batches of its topics).

    The state it snapshots is None: the table (and the group offsets) hold the progress.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._writers: dict[str, DeltaTableWriter] = {}
        self._buffers: dict[str, _Buffer] = {}
        self._group: Consumer | None = None

    def write_batch(self, values: list[pa.RecordBatch]) -> None:
        for batch in values:
            topic = batch.column(0)[0].as_py() if batch.num_rows else None
            if topic is None:
                continue
            buffer = self._buffers.setdefault(topic, _Buffer())
            buffer.add(batch)
            metrics.BUFFERED_ROWS.labels(topic).set(buffer.rows)
            if (
                buffer.rows >= self._settings.max_batch_rows
                or buffer.bytes >= self._settings.max_batch_bytes
            ):
                self._flush(topic)

    def snapshot(self) -> None:
        for topic in list(self._buffers):
            self._flush(topic)

    def close(self) -> None:
        self.snapshot()
        PROGRESS.close()
        if self._group is not None:
            self._group.close()

    def _flush(self, topic: str) -> None:
        buffer = self._buffers.get(topic)
        if buffer is None or not buffer.batches:
            return
        data = buffer.take()
        next_offsets = _next_offsets(data)
        writer = self._writer(topic)
        guarantee = self._settings.guarantee
        started = time.perf_counter()
        if guarantee is Guarantee.AT_MOST_ONCE:
            # The position moves first: a crash before the write below loses these rows.
            offsets.commit_group_offsets(self._group_consumer(), topic, next_offsets)
            result = writer.append(data)
        elif guarantee is Guarantee.AT_LEAST_ONCE:
            result = writer.append(data)
            self._commit_group_after_write(topic, next_offsets)
        else:
            result = writer.write_exactly_once(data)
            self._commit_group_after_write(topic, next_offsets)
        elapsed = time.perf_counter() - started
        metrics.BUFFERED_ROWS.labels(topic).set(0)
        metrics.COMMITS.labels(topic).inc()
        metrics.COMMIT_SECONDS.labels(topic).observe(elapsed)
        metrics.RECORDS_WRITTEN.labels(topic).inc(result.rows_written)
        metrics.RECORDS_SKIPPED.labels(topic).inc(result.rows_skipped)
        if data.num_rows:
            metrics.BYTES_WRITTEN.labels(topic).inc(
                data.nbytes * result.rows_written // data.num_rows
            )
        PROGRESS.landed(data.num_rows)
        for partition, next_offset in next_offsets.items():
            metrics.LAG.set_committed(topic, partition, next_offset - 1)
        log.info(
            "committed %s: version %s, %d rows written, %d already there, offsets %s, %.0f ms",
            writer.uri,
            result.version,
            result.rows_written,
            result.rows_skipped,
            _offset_ranges(data),
            elapsed * 1000,
        )

    def _commit_group_after_write(self, topic: str, next_offsets: dict[int, int]) -> None:
        """The group offset is for lag tools here; the data is already safe, so only warn."""
        try:
            offsets.commit_group_offsets(self._group_consumer(), topic, next_offsets)
        except KafkaException as exc:
            metrics.GROUP_COMMIT_FAILURES.labels(topic).inc()
            log.warning(
                "could not commit offsets of %s to group %s: %s",
                topic,
                self._settings.group_id,
                exc,
            )

    def _writer(self, topic: str) -> DeltaTableWriter:
        if topic not in self._writers:
            self._writers[topic] = DeltaTableWriter(
                self._settings.table_uri(topic),
                topic,
                self._settings.storage_options,
                self._settings.commit_retries,
            )
        return self._writers[topic]

    def _group_consumer(self) -> Consumer:
        if self._group is None:
            self._group = make_consumer(self._settings, what="group offsets")
        return self._group


def _offset_ranges(data: pa.Table) -> str:
    """`partition:first-last` per partition, for the commit log line."""
    grouped = data.group_by("partition").aggregate([("offset", "min"), ("offset", "max")])
    rows = sorted(
        zip(
            grouped["partition"].to_pylist(),
            grouped["offset_min"].to_pylist(),
            grouped["offset_max"].to_pylist(),
            strict=True,
        )
    )
    return " ".join(f"{p}:{lo}-{hi}" for p, lo, hi in rows)


def _next_offsets(data: pa.Table) -> dict[int, int]:
    """Partition -> next offset to read, after everything in `data`."""
    grouped = data.group_by("partition").aggregate([("offset", "max")])
    nexts = pc.add(grouped["offset_max"], 1)
    return dict(zip(grouped["partition"].to_pylist(), nexts.to_pylist(), strict=True))


class DeltaSink(FixedPartitionedSink[pa.RecordBatch, None]):
    """One sink partition per table, so each table has exactly one committer in the cluster."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tables = sorted(settings.topics)
        metrics.declare_topics(self._tables)

    def list_parts(self) -> list[str]:
        return self._tables

    def part_fn(self, item_key: str) -> int:
        # A distinct index per table: no two tables share a committer, and none is left idle.
        return self._tables.index(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> TableSinkPartition:
        return TableSinkPartition(self._settings)
