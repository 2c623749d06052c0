"""Commits changes to a current-state table: one Delta MERGE per flush, exactly once.

Integrity rule: the table holds, per live key, the change that is latest by the ordering rule
(`connectors.state.changes`), and its markers cover every change applied. Each flush drops the
changes at or below the markers (replays), keeps the latest change per key, and MERGEs them in
one commit that carries the markers (a MERGE that changes nothing still commits them, as an
empty append). Within the MERGE a change only replaces a row it is newer than, so no order of
commits can let an older change win. The MERGE reads only the key buckets the flush touches (a
literal predicate on the partition column), and is committed against the snapshot the markers
were read from: a zombie's commit makes it fail, and it is retried on a fresh snapshot.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from connectors import metrics, offsets
from connectors.errors import ConcurrentWriteError
from connectors.maintenance import MaintenancePolicy, TableMaintenance
from connectors.state.changes import BUCKET, DELETED, latest_per_key
from connectors.table_writer import CommitResult, above_markers

log = logging.getLogger(__name__)

REOPEN_EVERY_COMMITS = 100

_LATER = "(s.timestamp > t.timestamp OR (s.timestamp IS NOT NULL AND t.timestamp IS NULL))"
_SAME_TIME = "(s.timestamp = t.timestamp OR (s.timestamp IS NULL AND t.timestamp IS NULL))"
NEWER = (
    "(s.partition = t.partition AND s.offset > t.offset) OR (s.partition <> t.partition AND "
    f"({_LATER} OR ({_SAME_TIME} AND s.partition > t.partition)))"
)
"""A change replaces the stored row only if it is newer: the ordering rule, in SQL."""


class StateTableWriter:
    """The only committer of one current-state table within the job."""

    def __init__(
        self,
        uri: str,
        topic: str,
        key_columns: Sequence[str],
        storage_options: Mapping[str, str] | None = None,
        max_attempts: int = 20,
        maintenance: MaintenancePolicy | None = None,
    ) -> None:
        self.uri = uri
        self.topic = topic
        self.schema = None  # the table's columns grow with the values' fields
        self._keys = list(key_columns)
        self._storage = dict(storage_options or {}) or None
        self._max_attempts = max_attempts
        self._policy = maintenance or MaintenancePolicy()
        self._maintenance = TableMaintenance(uri, self._policy)
        self._table: DeltaTable | None = None
        self._commits_on_handle = 0

    def current(self) -> DeltaTable | None:
        if self._table is not None and self._commits_on_handle < REOPEN_EVERY_COMMITS:
            self._table.update_incremental()
            return self._table
        self._table = offsets.open_table(self.uri, self._storage or {})
        self._commits_on_handle = 0
        return self._table

    def append(self, batch: pa.Table) -> CommitResult:
        raise NotImplementedError("current-state tables are exactly-once only")

    def write_exactly_once(
        self, changes: pa.Table, marks: Mapping[int, offsets.Mark] | None = None
    ) -> CommitResult:
        marks = offsets.coverage(changes) if marks is None else marks
        for attempt in range(1, self._max_attempts + 1):
            try:
                table = self.current()
                if table is None:
                    table = self._create(changes.schema)
                return self._merge(table, changes, marks, attempt)
            except CommitFailedError as exc:
                metrics.COMMIT_CONFLICTS.labels(self.topic).inc()
                if attempt == self._max_attempts:
                    raise ConcurrentWriteError(
                        f"{self.uri}: gave up after {attempt} conflicting commits: {exc}"
                    ) from exc
                log.warning(
                    "%s: commit conflict (attempt %d), retrying: %s", self.uri, attempt, exc
                )
                self._table = None
                time.sleep(min(0.05 * attempt, 1.0) * random.random())
        raise AssertionError("unreachable")

    def _create(self, schema: pa.Schema) -> DeltaTable:
        columns = pa.schema([f for f in schema if f.name != DELETED])
        DeltaTable.create(
            self.uri,
            columns,
            mode="ignore",
            partition_by=[BUCKET],
            storage_options=self._storage,
            configuration=self._policy.table_configuration(),
        )
        log.info("%s: created current-state table (keys %s)", self.uri, ", ".join(self._keys))
        self._table = None
        table = self.current()
        assert table is not None
        return table

    def _merge(
        self,
        table: DeltaTable,
        changes: pa.Table,
        marks: Mapping[int, offsets.Mark],
        attempt: int,
    ) -> CommitResult:
        markers = offsets.table_markers(table, self.topic, marks)
        moving = {p: m for p, m in marks.items() if p not in markers or m.last_offset > markers[p]}
        fresh = above_markers(changes, markers)
        latest = latest_per_key(fresh, self._keys) if fresh.num_rows else fresh
        commit = offsets.marker_commit(self.topic, moving) if moving else None
        before = table.version()
        if latest.num_rows:
            buckets = ", ".join(str(b) for b in sorted(set(latest[BUCKET].to_pylist())))
            on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in self._keys)
            (
                table.merge(
                    source=latest,
                    predicate=f"t.{BUCKET} IN ({buckets}) AND {on}",
                    source_alias="s",
                    target_alias="t",
                    merge_schema=True,
                    streamed_exec=False,
                    commit_properties=commit,
                )
                .when_matched_delete(predicate=f"s.{DELETED} AND ({NEWER})")
                .when_matched_update_all(
                    predicate=f"NOT s.{DELETED} AND ({NEWER})", except_cols=[DELETED]
                )
                .when_not_matched_insert_all(predicate=f"NOT s.{DELETED}", except_cols=[DELETED])
                .execute()
            )
        if commit is not None and table.version() == before:
            # Nothing changed (replays, deletes of absent keys): the markers still move.
            empty = pa.schema(table.schema().to_arrow()).empty_table()
            write_deltalake(table, empty, mode="append", commit_properties=commit)
        if table.version() != before:
            self._commits_on_handle += 1
            self._maintenance.after_commit(table)
        applied = latest.num_rows
        return CommitResult(applied, changes.num_rows - applied, table.version(), attempt)
