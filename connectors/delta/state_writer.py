"""Commits changes to a current-state table with Delta MERGE, exactly once.

Integrity rule: the table holds, per live key, the change that is latest by the ordering rule
(`connectors.decoding.state_changes`), and its markers cover every change applied. Each flush drops the
changes at or below the markers (replays), keeps the latest change per key, and MERGEs them; the
commit that completes the flush carries the markers (a flush that changes nothing still commits
them, as an empty append). Within a MERGE a change only replaces a row it is newer than, so
applying a change twice changes nothing and no order of commits lets an older change win.

Cost: a MERGE reads only the key buckets the flush touches (a literal predicate on the partition
column). Where those buckets hold more than `merge_rows` rows, the flush is merged bucket group
by bucket group (memory stays bounded); only the last carries the markers, and a crash between
them replays the flush, which the rule above makes harmless. Every commit carries the writer's
fence `txn` and is made against the snapshot the markers were read from, so a second instance
(a zombie) makes one of them conflict; it re-reads, re-filters and retries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from connectors.config import Settings
from connectors.decoding.state_changes import (
    BUCKET,
    DELETED,
    STATE_COLUMNS,
    key_columns,
    latest_per_key,
)
from connectors.decoding.state_startup import BUCKETS_PROPERTY, stored_buckets
from connectors.delta import markers as offsets
from connectors.delta.conflicts import retry_conflicts
from connectors.delta.handle import TableHandle
from connectors.delta.maintenance import MaintenancePolicy
from connectors.delta.table_writer import CommitResult, above_markers
from connectors.delta.writers import WriterFactory
from connectors.flow_settings import reads
from connectors.kafka import topic_ids
from connectors.kafka.records import SCHEMA

log = logging.getLogger(__name__)

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
        merge_rows: int = 2_000_000,
        key_buckets: int | None = None,
    ) -> None:
        self.uri = uri
        self.topic = topic
        self.schema = None  # the table's columns grow with the values' fields
        self._keys = list(key_columns)
        self._max_attempts = max_attempts
        policy = maintenance or MaintenancePolicy()
        self._handle = TableHandle(uri, storage_options, policy)
        self._properties = policy.writer_properties()
        self._merge_rows = merge_rows
        self._buckets = key_buckets
        self._stamped = False

    def current(self) -> DeltaTable | None:
        return self._handle.current()

    def append(self, batch: pa.Table) -> CommitResult:
        raise NotImplementedError("current-state tables are exactly-once only")

    def write_exactly_once(
        self, changes: pa.Table, marks: Mapping[int, offsets.Mark] | None = None
    ) -> CommitResult:
        marks = offsets.coverage(changes) if marks is None else marks

        def commit(attempt: int) -> CommitResult:
            table = self.current()
            if table is None:
                schema = changes.schema if changes.num_columns else self._bare_schema()
                if schema is None:  # no row yet, and the key fields' types are unknown
                    return CommitResult(0, 0, None, attempt)
                table = self._create(schema)
            stored = pa.schema([f for f in changes.schema if f.name != DELETED])
            table = self._handle.admit(table, stored)
            self._stamp(table)
            return self._merge(table, changes, marks, attempt)

        return retry_conflicts(
            self.uri, self.topic, self._max_attempts, commit, self._handle.reopen
        )

    def _stamp(self, table: DeltaTable) -> None:
        """Record the bucket count and the Kafka topic ID on the table (once), so a later start
        with another count, or on a recreated topic, is refused (`state_startup.check_buckets`,
        `topic_ids.check_topic_ids`; a table made before the property passed the check)."""
        if self._stamped:
            return
        topic_id = topic_ids.KNOWN.get(self.topic)
        if topic_id is not None:
            topic_ids.stamp(table, self.topic, topic_id)
        if self._buckets is not None and stored_buckets(table) is None:
            properties = {BUCKETS_PROPERTY: str(self._buckets)}
            table.alter.set_table_properties(properties, raise_if_not_exists=False)
            log.info("%s: stamped with %d key buckets", self.uri, self._buckets)
        self._stamped = True

    def _bare_schema(self) -> pa.Schema | None:
        """The columns of a table keyed by the Kafka key, for a first flush with no change
        (every record a dead letter): its markers need a table. Key fields: types unknown."""
        if self._keys != ["key"]:
            return None
        names = [*STATE_COLUMNS, "key"]
        return pa.schema([*(SCHEMA.field(n) for n in names), pa.field(BUCKET, pa.int32())])

    def _create(self, schema: pa.Schema) -> DeltaTable:
        columns = pa.schema([f for f in schema if f.name != DELETED])
        table = self._handle.create(columns, [BUCKET])
        log.info("%s: created current-state table (keys %s)", self.uri, ", ".join(self._keys))
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
        if not changes.num_columns:  # every record of the flush went elsewhere
            changes = pa.schema(table.schema().to_arrow()).empty_table()
        fresh = above_markers(changes, markers)
        latest = latest_per_key(fresh, self._keys) if fresh.num_rows else fresh
        fence = Transaction(app_id=f"waxlake:{self.topic}:state-writer", version=table.version())
        groups = self._bucket_groups(table, latest) if latest.num_rows else []
        marked = False
        for index, group in enumerate(groups):
            last = index == len(groups) - 1
            rows = latest.filter(pc.is_in(latest[BUCKET], pa.array(group, pa.int32())))
            commit = self._commit(moving if last else {}, fence)
            marked = self._merge_buckets(table, rows, group, commit) and last
        if moving and not marked:
            # Nothing changed (replays, deletes of absent keys): the markers still move.
            empty = pa.schema(table.schema().to_arrow()).empty_table()
            commit = self._commit(moving, fence)
            write_deltalake(table, empty, mode="append", commit_properties=commit)
            self._handle.committed(table)
        applied = latest.num_rows
        superseded = fresh.num_rows - applied
        return CommitResult(
            applied, changes.num_rows - applied, table.version(), attempt, superseded
        )

    def _commit(self, marks: Mapping[int, offsets.Mark], fence: Transaction) -> CommitProperties:
        """The markers (if any) and the writer's fence: two instances merging from the same
        snapshot both carry it, so the later one conflicts."""
        markers = offsets.marker_commit(self.topic, marks).app_transactions if marks else []
        return CommitProperties(app_transactions=[*(markers or []), fence])

    def _bucket_groups(self, table: DeltaTable, latest: pa.Table) -> list[list[int]]:
        """The buckets the changes touch, grouped so that one MERGE reads at most about
        `merge_rows` rows of the table (memory stays bounded as the table grows)."""
        touched = sorted(set(latest[BUCKET].to_pylist()))
        actions = pa.table(table.get_add_actions(flatten=True))
        sizes: dict[int, int] = {}
        if actions.num_rows:
            by_bucket = actions.group_by(f"partition.{BUCKET}").aggregate([("num_records", "sum")])
            for bucket, rows in zip(*(c.to_pylist() for c in by_bucket.columns), strict=True):
                sizes[int(bucket)] = int(rows or 0)
        groups: list[list[int]] = [[]]
        total = 0
        for bucket in touched:
            if groups[-1] and total + sizes.get(bucket, 0) > self._merge_rows:
                groups.append([])
                total = 0
            groups[-1].append(bucket)
            total += sizes.get(bucket, 0)
        return groups

    def _merge_buckets(
        self, table: DeltaTable, rows: pa.Table, buckets: list[int], commit: CommitProperties
    ) -> bool:
        """One MERGE of `rows` into `buckets`; True if it made a commit."""
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in self._keys)
        literal = ", ".join(str(b) for b in buckets)
        before = table.version()
        (
            table.merge(
                source=rows,
                predicate=f"t.{BUCKET} IN ({literal}) AND {on}",
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                streamed_exec=False,
                commit_properties=commit,
                writer_properties=self._properties,
            )
            .when_matched_delete(predicate=f"s.{DELETED} AND ({NEWER})")
            .when_matched_update_all(
                predicate=f"NOT s.{DELETED} AND ({NEWER})", except_cols=[DELETED]
            )
            .when_not_matched_insert_all(predicate=f"NOT s.{DELETED}", except_cols=[DELETED])
            .execute()
        )
        if table.version() == before:
            return False
        self._handle.committed(table)
        return True


def state_tables(settings: Settings) -> WriterFactory:
    """Writers of current-state tables (for `DeltaSink(make_writer=...)`)."""
    reads("key_fields", "key_buckets", "state_merge_rows")

    def make(uri: str, topic: str) -> StateTableWriter:
        return StateTableWriter(
            uri,
            topic,
            key_columns(settings),
            settings.storage_options,
            settings.commit_retries,
            maintenance=settings.maintenance(),
            merge_rows=settings.state_merge_rows,
            key_buckets=settings.key_buckets,
        )

    return make
