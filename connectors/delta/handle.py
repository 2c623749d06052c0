"""One writer's handle on its Delta table: brought up to date before each commit, created empty
when missing, reopened after a conflict and every `REOPEN_EVERY_COMMITS` commits, and the
table's maintenance run after each commit made through it."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
from deltalake import DeltaTable

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
            schema,
            mode="ignore",
            partition_by=partition_by,
            storage_options=self.storage,
            configuration=self._policy.table_configuration(),
        )
        self.reopen()
        table = self.current()
        assert table is not None
        return table

    def committed(self, table: DeltaTable) -> None:
        """A commit was made through this handle: count it, run the maintenance that is due."""
        self._commits += 1
        self._maintenance.after_commit(table)
