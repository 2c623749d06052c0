"""Commits batches of records to one Delta table.

`write_exactly_once` is an idempotent upsert keyed by (topic, partition, offset): rows at or below
a partition's `txn` marker are dropped, the rest are appended in one commit together with new
markers. Where the table holds rows of a partition but no marker for it (written by something
else, or its marker lost), the rows go through a MERGE bounded to that partition and offset range.
Every commit is made against the snapshot the markers were read from, so a concurrent writer (a
zombie instance) makes the commit fail with `CommitFailedError`; we then refresh and re-filter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from connectors.batch import COORDINATES
from connectors.delta import markers as offsets
from connectors.delta.conflicts import retry_conflicts
from connectors.delta.handle import TableHandle
from connectors.delta.maintenance import MaintenancePolicy
from connectors.delta.parquet_files import ParquetAppender, fitted
from connectors.kafka import topic_ids
from connectors.kafka.records import PARTITION_COLUMNS, SCHEMA

COORDINATES_SCHEMA = pa.schema([SCHEMA.field(name) for name in COORDINATES])

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommitResult:
    """What one `write_*` call made durable."""

    rows_written: int
    rows_skipped: int
    version: int | None
    attempts: int
    superseded: int | None = None
    """Current-state tables: of `rows_skipped`, the changes a later one of the same key in the
    flush replaced (the rest were replays)."""


class DeltaTableWriter:
    """The only committer of one table within this job (one sink partition per table)."""

    def __init__(
        self,
        uri: str,
        topic: str,
        storage_options: Mapping[str, str] | None = None,
        max_attempts: int = 20,
        schema: pa.Schema | None = SCHEMA,
        maintenance: MaintenancePolicy | None = None,
        topic_id: str | None = None,
        marker_key: str | None = None,
    ) -> None:
        """`schema`: the fixed schema rows are cast to; None lets the table's schema grow with
        new columns (additive evolution, for decoded tables). `topic_id`: the Kafka topic ID the
        table is filled from, stamped on it (None: the broker has none, or not a topic's table).
        `marker_key`: the name the markers are kept under (default: the topic); a dead-letter
        table that several routed tables write keeps one set per writer, since each set drops
        the rows at or below it as already there."""
        self.uri = uri
        self.topic = topic
        self.marker_key = marker_key or topic
        self.schema = schema
        policy = maintenance or MaintenancePolicy()
        self._handle = TableHandle(uri, storage_options, policy)
        self._max_attempts = max_attempts
        self._topic_id = topic_id
        self._topic_id_checked = False
        self._properties = policy.writer_properties()
        self._appender = ParquetAppender(policy.parquet_compression)

    def current(self) -> DeltaTable | None:
        """The table at its latest version, or None if it does not exist yet."""
        return self._handle.current()

    # -- writes ------------------------------------------------------------

    def write_exactly_once(
        self, batch: pa.Table, marks: Mapping[int, offsets.Mark] | None = None
    ) -> CommitResult:
        """Land every row of `batch` whose key is not in the table yet, exactly once, and move
        each partition's marker to `marks` (default: the last row of each partition in `batch`;
        the sink passes the whole flush's, so records that went elsewhere count as handled)."""
        return self._with_retries(batch, offsets.coverage(batch) if marks is None else marks)

    def append(self, batch: pa.Table) -> CommitResult:
        """Plain append, no dedupe (at-least-once and at-most-once)."""
        return self._with_retries(batch, None)

    def _with_retries(
        self, batch: pa.Table, marks: Mapping[int, offsets.Mark] | None
    ) -> CommitResult:
        if self.schema is not None and batch.num_columns and batch.schema != self.schema:
            batch = batch.cast(self.schema)

        def commit(attempt: int) -> CommitResult:
            nonlocal batch
            table = self._handle.current()
            if table is None:
                if not batch.num_columns and marks is None:  # nothing to land, nothing to mark
                    return CommitResult(0, 0, None, attempt)
                # Markers without rows (all dead letters, or filtered out) need a table too, or
                # the offsets they cover would be read again at every start: the coordinates
                # make one, the first rows add their columns.
                table = self._create(batch.schema if batch.num_columns else self._bare_schema())
            if not batch.num_columns:  # only markers to move (every record went elsewhere)
                batch = pa.schema(table.schema().to_arrow()).empty_table()
            table = self._handle.admit(table, batch.schema)
            self._check_topic_id(table)
            if marks is None:
                return self._append(table, batch, None, attempt)
            return self._upsert(table, batch, marks, attempt)

        return retry_conflicts(
            self.uri, self.topic, self._max_attempts, commit, self._handle.reopen
        )

    def _check_topic_id(self, table: DeltaTable) -> None:
        """Stamp the table with the Kafka topic ID it is filled from, once; refuse another."""
        if self._topic_id is None or self._topic_id_checked:
            return
        topic_ids.stamp(table, self.topic, self._topic_id)
        self._topic_id_checked = True

    def _bare_schema(self) -> pa.Schema:
        return self.schema if self.schema is not None else COORDINATES_SCHEMA

    def _create(self, schema: pa.Schema) -> DeltaTable:
        """Create the table empty; rows always go through the marker-checked path.

        Creating it with its first rows would race: delta-rs retries a losing create as the next
        version, rows and markers included, without dedupe. An empty create that loses is harmless.
        """
        table = self._handle.create(schema, PARTITION_COLUMNS)
        log.info("%s: created table", self.uri)
        return table

    def _upsert(
        self, table: DeltaTable, batch: pa.Table, marks: Mapping[int, offsets.Mark], attempt: int
    ) -> CommitResult:
        markers = offsets.table_markers(table, self.marker_key, marks)
        # Markers only grow: a partition whose marker is already at or past the flush moves not.
        moving = {p: m for p, m in marks.items() if p not in markers or m.last_offset > markers[p]}
        fresh = above_markers(batch, markers)
        unmarked = [p for p in moving if p not in markers]
        needs_merge = _partitions_with_rows(table, unmarked) if unmarked else []
        written = 0
        for partition in needs_merge:
            rows = fresh.filter(pc.equal(fresh["partition"], partition))
            written += self._merge(table, rows, partition, moving.pop(partition))
        if needs_merge:
            merged = pa.array(needs_merge, pa.int32())
            fresh = fresh.filter(pc.invert(pc.is_in(fresh["partition"], merged)))
        result = self._append(table, fresh, moving, attempt)
        written += result.rows_written
        return CommitResult(written, batch.num_rows - written, table.version(), attempt)

    def _append(
        self,
        table: DeltaTable,
        batch: pa.Table,
        marks: Mapping[int, offsets.Mark] | None,
        attempt: int,
    ) -> CommitResult:
        """Append `batch` with `marks` as its partitions' markers (None: a plain append).

        Nothing to append and no marker to move: no commit. Markers without rows (every record
        of the flush went to the dead letters, or a step filtered them): an empty commit."""
        if batch.num_rows == 0 and not marks:
            return CommitResult(0, 0, table.version(), attempt)
        commit = offsets.marker_commit(self.marker_key, marks) if marks else None
        table_schema = pa.schema(table.schema().to_arrow())
        rows = fitted(table, batch, table_schema)
        if rows is not None:
            self._appender.append(table, rows, table_schema, commit)
        else:
            write_deltalake(
                table,
                batch,
                mode="append",
                schema_mode=None if self.schema is not None else "merge",
                commit_properties=commit,
                writer_properties=self._properties,
            )
        self._handle.committed(table)
        return CommitResult(batch.num_rows, 0, table.version(), attempt)

    def _merge(self, table: DeltaTable, rows: pa.Table, partition: int, mark: offsets.Mark) -> int:
        """Insert the rows of a partition that has rows but no marker, where not matched."""
        commit = offsets.marker_commit(self.marker_key, {partition: mark})
        if rows.num_rows == 0:
            write_deltalake(table, rows, mode="append", commit_properties=commit)
            self._handle.committed(table)
            return 0
        low = pc.min(rows["offset"]).as_py()
        high = pc.max(rows["offset"]).as_py()
        predicate = (
            f"t.partition = {int(partition)} AND t.offset >= {int(low)} "
            f"AND t.offset <= {int(high)} "
            "AND t.partition = s.partition AND t.offset = s.offset"
        )
        metrics = (
            table.merge(
                source=rows,
                predicate=predicate,
                source_alias="s",
                target_alias="t",
                streamed_exec=False,
                merge_schema=self.schema is None,
                commit_properties=commit,
                writer_properties=self._properties,
            )
            .when_not_matched_insert_all()
            .execute()
        )
        count = int(metrics.get("num_target_rows_inserted", 0))
        if count == 0:
            # A merge that inserts nothing makes no commit: keep the marker with an empty append.
            write_deltalake(table, rows.slice(0, 0), mode="append", commit_properties=commit)
        self._handle.committed(table)
        log.info(
            "%s: merged partition %d offsets %d..%d (%d new rows; no marker before)",
            self.uri,
            partition,
            low,
            high,
            count,
        )
        return count


def above_markers(batch: pa.Table, markers: Mapping[int, int]) -> pa.Table:
    """Rows whose offset is above their partition's marker (partitions without one: all rows)."""
    if not markers:
        return batch
    parts = pa.array(list(markers), pa.int32())
    marks = pa.array(list(markers.values()), pa.int64())
    index = pc.index_in(batch["partition"], value_set=parts)
    threshold = pc.fill_null(pc.take(marks, index), -1)
    keep = pc.greater(batch["offset"], threshold)
    # The usual case after the first commit: nothing to drop, so no copy.
    return batch if pc.all(keep).as_py() else batch.filter(keep)


def _partitions_with_rows(table: DeltaTable, partitions: list[int]) -> list[int]:
    """Which of `partitions` already have rows in the table.

    Metadata only for waxlake's own tables (partitioned by Kafka partition); a table made by
    something else is scanned, once per partition until the partition gets its marker.
    """
    if table.metadata().partition_columns == PARTITION_COLUMNS:
        present = {int(p["partition"]) for p in table.partitions() if p["partition"] is not None}
        return [p for p in partitions if p in present]
    dataset = table.to_pyarrow_dataset()
    return [
        p
        for p in partitions
        if dataset.head(1, columns=["offset"], filter=pc.field("partition") == p).num_rows
    ]
