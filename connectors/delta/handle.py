"""One writer's handle on its Delta table: brought up to date before each commit, created empty
when missing, reopened after a conflict and every `REOPEN_EVERY_COMMITS` commits, and the
table's maintenance run after each commit made through it."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.schema import Schema
from deltalake.table import TableFeatures  # type: ignore[attr-defined]

from connectors.delta.maintenance import MaintenancePolicy, TableMaintenance
from connectors.delta.markers import open_table

REOPEN_EVERY_COMMITS = 100
"""Commit latency creeps up with commits made through one handle; a fresh one keeps it flat."""


class TableHandle:
    def __init__(
        self, uri: str, storage_options: Mapping[str, str] | None, policy: MaintenancePolicy
    ) -> None:
        self.uri = uri
        self.storage = dict(storage_options or {}) or None
        self._policy = policy
        self._maintenance = TableMaintenance(uri, policy)
        self._table: DeltaTable | None = None
        self._commits = 0

    def current(self) -> DeltaTable | None:
        """The table at its latest version, or None if it does not exist yet."""
        if self._table is not None and self._commits < REOPEN_EVERY_COMMITS:
            self._table.update_incremental()
            return self._table
        self._table = open_table(self.uri, self.storage or {})
        self._commits = 0
        return self._table

    def reopen(self) -> None:
        """Open the table afresh next time (a conflict may come from a re-created table)."""
        self._table = None

    def create(self, schema: pa.Schema, partition_by: list[str]) -> DeltaTable:
        """Create the table empty unless it exists (a create that loses a race is harmless),
        with the policy's table properties, and return it."""
        DeltaTable.create(
            self.uri,
            _creatable(schema),
            mode="ignore",
            partition_by=partition_by,
            storage_options=self.storage,
            configuration=self._policy.table_configuration(),
        )
        self.reopen()
        table = self.current()
        assert table is not None
        return self.admit(table, schema)

    def admit(self, table: DeltaTable, schema: pa.Schema) -> DeltaTable:
        """`table`, able to take rows of `schema`: with the columns it lacks added at its end.

        delta-rs turns the timestampNtz feature on itself for a naive timestamp column or struct
        field, not for one inside a map, and then refuses the commit (every retry and restart
        alike). Its schema merge on write moves the partition column behind the others and
        orders a MERGE's new columns at random, so new columns are added first, in the rows'
        order."""
        features = table.protocol().writer_features or []
        if "timestampNtz" not in features and _has_naive_timestamp(schema):
            table.alter.add_feature(
                TableFeatures.TimestampWithoutTimezone, allow_protocol_versions_increase=True
            )
            table = self._fresh()
        held = {name.lower() for name in pa.schema(table.schema().to_arrow()).names}
        new = [f.with_nullable(True) for f in schema if f.name.lower() not in held]
        if new:
            table.alter.add_columns(list(Schema.from_arrow(pa.schema(new)).fields))
            table = self._fresh()
        return table

    def _fresh(self) -> DeltaTable:
        self.reopen()
        current = self.current()
        assert current is not None
        return current

    def committed(self, table: DeltaTable) -> None:
        """A commit was made through this handle: count it, run the maintenance that is due."""
        self._commits += 1
        self._maintenance.after_commit(table)


def _has_naive_timestamp(schema: pa.Schema | pa.DataType, in_map: bool = False) -> bool:
    """Whether a timestamp without time zone is anywhere in `schema` (`in_map`: inside a map),
    walked without recursion."""
    types = (
        [(f.type, False) for f in schema] if isinstance(schema, pa.Schema) else [(schema, False)]
    )
    while types:
        t, mapped = types.pop()
        if pa.types.is_timestamp(t) and t.tz is None and (mapped or not in_map):
            return True
        mapped = mapped or pa.types.is_map(t)
        types += [(t.field(i).type, mapped) for i in range(t.num_fields)]
    return False


def _creatable(schema: pa.Schema) -> pa.Schema:
    """`schema` without the columns delta-rs cannot create a table with (a naive timestamp
    inside a map: it refuses the feature it needs); the first commit adds them back, once
    `admit` has turned the feature on."""
    return pa.schema([f for f in schema if not _has_naive_timestamp(f.type, in_map=True)])
