"""waxlake's Bytewax sink: buffers Arrow batches per table, commits them at each epoch snapshot.

Committing in `snapshot()` means Bytewax's recovery state never runs ahead of what is durable in
the table. The order of table write and Kafka group commit is what the guarantee is made of:

- exactly-once: write (deduplicated against the table's `txn` markers), then commit the group;
- at-least-once: write (plain append), then commit the group;
- at-most-once: commit the group, then write (plain append).

Records the decoder rejects go to the topic's dead-letter table, written just before the table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import Consumer, KafkaException
from deltalake.exceptions import DeltaError

from connectors import metrics, offsets, topic_ids
from connectors.config import Guarantee, Settings
from connectors.dead_letters import DEAD_LETTER_SCHEMA, dead_letter_uri
from connectors.decode import Decoder
from connectors.errors import ConcurrentWriteError, TableWriteError, commit_failure
from connectors.kafka import make_consumer
from connectors.progress import PROGRESS
from connectors.records import SCHEMA
from connectors.table_writer import CommitResult, DeltaTableWriter

log = logging.getLogger(__name__)

DecoderFactory = Callable[[str], Decoder]
"""Builds the decoder of one topic's table (the flow decides: raw or JSON)."""


class TableWriter(Protocol):
    """Commits rows to one table: `DeltaTableWriter` (append), `StateTableWriter` (MERGE)."""

    uri: str

    def write_exactly_once(
        self, batch: pa.Table, marks: Mapping[int, offsets.Mark] | None = None
    ) -> CommitResult: ...

    def append(self, batch: pa.Table) -> CommitResult: ...


WriterFactory = Callable[[str, str], TableWriter]
"""Builds the writer of one topic's table from its URI and topic (None: append tables)."""


@dataclass
class _Buffer:
    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    since: float = 0.0  # monotonic time of the oldest buffered batch

    def add(self, batch: pa.RecordBatch) -> None:
        if not self.batches:
            self.since = time.monotonic()
        self.batches.append(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes

    def take(self) -> pa.Table:
        table = pa.Table.from_batches(self.batches)
        self.batches, self.rows, self.bytes = [], 0, 0
        return table


@dataclass
class _Table:
    """What the sink keeps per table: its buffer, decoder, writer and dead-letter writer."""

    decoder: Decoder
    writer: TableWriter
    dead_letters: DeltaTableWriter
    buffer: _Buffer = field(default_factory=_Buffer)


class TableSinkPartition(StatefulSinkPartition[pa.RecordBatch, None]):
    """Buffers and commits the batches routed to it (all batches of its topics).

    The state it snapshots is None: the table (and the group offsets) hold the progress.
    """

    def __init__(
        self,
        settings: Settings,
        make_decoder: DecoderFactory,
        make_writer: WriterFactory | None = None,
    ) -> None:
        self._settings = settings
        self._make_decoder = make_decoder
        self._make_writer = make_writer
        self._tables: dict[str, _Table] = {}
        self._group: Consumer | None = None

    def write_batch(self, values: list[pa.RecordBatch]) -> None:
        for batch in values:
            if not batch.num_rows:
                continue
            topic = batch.column(0)[0].as_py()
            buffer = self._table(topic).buffer
            buffer.add(batch)
            metrics.BUFFERED_ROWS.labels(topic).set(buffer.rows)
            if self._full(buffer):
                self._flush(topic)

    def _full(self, buffer: _Buffer) -> bool:
        """Commit before the epoch ends: the buffer is too big, or (with a commit interval) its
        oldest record has waited long enough."""
        settings = self._settings
        interval = settings.commit_interval_ms / 1000
        return (
            buffer.rows >= settings.max_batch_rows
            or buffer.bytes >= settings.max_batch_bytes
            or (interval > 0 and time.monotonic() - buffer.since >= interval)
        )

    def snapshot(self) -> None:
        for topic in list(self._tables):
            self._flush(topic)

    def close(self) -> None:
        self.snapshot()
        PROGRESS.close()
        if self._group is not None:
            self._group.close()

    def _flush(self, topic: str) -> None:
        state = self._tables[topic]
        if not state.buffer.batches:
            return
        try:
            self._commit(topic, state)
        except (DeltaError, OSError, ConcurrentWriteError, KafkaException) as exc:
            raise TableWriteError(commit_failure(topic, state.writer.uri, exc)) from exc

    def _commit(self, topic: str, state: _Table) -> None:
        raw = state.buffer.take()
        started = time.perf_counter()
        split = state.decoder.split(raw)
        dead = split.dead_table()
        ranges = _offset_ranges(raw)
        next_offsets = {p: last + 1 for p, (_, last) in ranges.items()}
        # Dead letters are committed before the rows: the table's markers decide where reading
        # resumes, so every dead letter below them must already be durable.
        guarantee = self._settings.guarantee
        if guarantee is Guarantee.AT_MOST_ONCE:
            # The position moves first: a crash before the writes below loses these records.
            offsets.commit_group_offsets(self._group_consumer(), topic, next_offsets)
        if guarantee is Guarantee.EXACTLY_ONCE:
            dead_result = state.dead_letters.write_exactly_once(dead) if dead.num_rows else None
            rows = _without_dead_letters(topic, state, split.rows)
            # The markers cover the whole flush: its dead letters are durable by now.
            result = state.writer.write_exactly_once(rows, offsets.coverage(raw))
        else:
            dead_result = state.dead_letters.append(dead) if dead.num_rows else None
            result = state.writer.append(split.rows)
        if guarantee is not Guarantee.AT_MOST_ONCE:
            self._commit_group_after_write(topic, next_offsets)
        elapsed = time.perf_counter() - started

        metrics.BUFFERED_ROWS.labels(topic).set(0)
        metrics.COMMITS.labels(topic).inc()
        metrics.COMMIT_SECONDS.labels(topic).observe(elapsed)
        metrics.RECORDS_WRITTEN.labels(topic).inc(result.rows_written)
        metrics.RECORDS_SKIPPED.labels(topic).inc(result.rows_skipped)
        metrics.BYTES_WRITTEN.labels(topic).inc(raw.nbytes * result.rows_written // raw.num_rows)
        if dead_result is not None:
            metrics.DEAD_LETTERS.labels(topic).inc(dead_result.rows_written)
            log.warning(
                "%d record(s) of %s went to %s: %s",
                dead_result.rows_written,
                topic,
                state.dead_letters.uri,
                _reasons(dead),
            )
        PROGRESS.landed(raw.num_rows)
        for partition, next_offset in next_offsets.items():
            metrics.LAG.set_committed(topic, partition, next_offset - 1)
        log.info(
            "committed %s: version %s, %d rows written, %d already there, offsets %s, %.0f ms",
            state.writer.uri,
            result.version,
            result.rows_written,
            result.rows_skipped,
            " ".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in sorted(ranges.items())),
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

    def _table(self, topic: str) -> _Table:
        if topic not in self._tables:
            settings = self._settings
            decoder = self._make_decoder(topic)

            def writer(uri: str, schema: pa.Schema | None) -> DeltaTableWriter:
                return DeltaTableWriter(
                    uri,
                    topic,
                    settings.storage_options,
                    settings.commit_retries,
                    schema=schema,
                    maintenance=settings.maintenance(),
                    topic_id=topic_ids.KNOWN.get(topic)
                    if schema is not DEAD_LETTER_SCHEMA
                    else None,
                )

            uri = settings.table_uri(topic)
            self._tables[topic] = _Table(
                decoder=decoder,
                writer=self._make_writer(uri, topic)
                if self._make_writer is not None
                else writer(uri, None if decoder.evolves_schema else SCHEMA),
                dead_letters=writer(
                    dead_letter_uri(settings.table_root, topic), DEAD_LETTER_SCHEMA
                ),
            )
        return self._tables[topic]

    def _group_consumer(self) -> Consumer:
        if self._group is None:
            self._group = make_consumer(self._settings, what="group offsets")
        return self._group


def _without_dead_letters(topic: str, state: _Table, rows: pa.Table) -> pa.Table:
    """Drop rows whose offsets the dead-letter table already holds.

    Only possible after a crash between the two commits of a flush: the replay may batch records
    differently, and a JSON field's inferred type with them, so a record that went to the dead
    letters could now decode. It stays a dead letter: each offset lands in one table only.
    """
    if rows.num_rows == 0:
        return rows
    dead_table = state.dead_letters.current()
    if dead_table is None:
        return rows
    grouped = rows.group_by("partition").aggregate([("offset", "min")])
    lowest = dict(
        zip(grouped["partition"].to_pylist(), grouped["offset_min"].to_pylist(), strict=True)
    )
    dead_marks = offsets.table_markers(dead_table, topic, lowest)
    suspects = {p: m for p, m in dead_marks.items() if lowest[p] <= m}
    if not suspects:
        return rows
    dataset = dead_table.to_pyarrow_dataset()
    for partition, mark in suspects.items():
        held = dataset.to_table(
            columns=["offset"],
            filter=(pc.field("partition") == partition)
            & (pc.field("offset") >= lowest[partition])
            & (pc.field("offset") <= mark),
        )["offset"]
        if len(held):
            clash = pc.and_(pc.equal(rows["partition"], partition), pc.is_in(rows["offset"], held))
            log.warning(
                "%s: %d record(s) already dead letters from before a restart stay there",
                topic,
                pc.sum(clash).as_py(),
            )
            rows = rows.filter(pc.invert(clash))
    return rows


def _reasons(dead: pa.Table) -> str:
    """`ErrorClass xN` per class, for the dead-letter warning."""
    counts = dead.group_by("error_class").aggregate([("offset", "count")])
    pairs = zip(counts["error_class"].to_pylist(), counts["offset_count"].to_pylist(), strict=True)
    return ", ".join(f"{name} x{count}" for name, count in sorted(pairs))


def _offset_ranges(data: pa.Table) -> dict[int, tuple[int, int]]:
    """Partition -> (first, last) offset in `data`."""
    grouped = data.group_by("partition").aggregate([("offset", "min"), ("offset", "max")])
    columns = (grouped[name].to_pylist() for name in ("partition", "offset_min", "offset_max"))
    return {p: (lo, hi) for p, lo, hi in zip(*columns, strict=True)}


class DeltaSink(FixedPartitionedSink[pa.RecordBatch, None]):
    """One sink partition per table, so each table has exactly one committer in the cluster."""

    def __init__(
        self,
        settings: Settings,
        make_decoder: DecoderFactory,
        make_writer: WriterFactory | None = None,
    ) -> None:
        self._settings = settings
        self._make_decoder = make_decoder
        self._make_writer = make_writer
        self._tables = sorted(settings.topics)
        metrics.declare_topics(self._tables)

    def list_parts(self) -> list[str]:
        return self._tables

    def part_fn(self, item_key: str) -> int:
        # A distinct index per table: no two tables share a committer, and none is left idle.
        return self._tables.index(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> TableSinkPartition:
        return TableSinkPartition(self._settings, self._make_decoder, self._make_writer)
