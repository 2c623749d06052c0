"""Keeps a table cheap to write and read as it ages, done by the job itself between commits.

- Checkpoints: delta-rs writes one every `delta.checkpointInterval` commits (set at creation), so
  loading the table never replays more than that many log files.
- Compaction: every `WAXLAKE_COMPACT_EVERY_COMMITS` commits of the table, small files are rewritten into files
  of about `WAXLAKE_COMPACT_TARGET_BYTES` (`optimize.compact`); it changes no data, so the `txn`
  markers and exactly-once are untouched.
- Vacuum: every `WAXLAKE_VACUUM_EVERY_COMMITS` commits, files no longer referenced and older than
  `WAXLAKE_VACUUM_RETENTION_HOURS` are deleted.
- Log cleanup: every checkpoint interval, log entries older than `WAXLAKE_LOG_RETENTION` (the
  table's `delta.logRetentionDuration`) are deleted; checkpoints keep the `txn` markers.

A maintenance step that fails (say, it conflicts with a zombie writer) is logged and retried at
the next interval; it never fails the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from deltalake import DeltaTable, WriterProperties
from deltalake.exceptions import DeltaError

from connectors.delta.parquet import writer_properties

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaintenancePolicy:
    compact_every_commits: int = 100
    compact_target_bytes: int = 128 * 1024 * 1024
    vacuum_every_commits: int = 1000
    vacuum_retention_hours: int = 168
    checkpoint_interval: int = 100
    log_retention: str = "interval 1 hours"
    parquet_compression: str = "lz4_raw"

    def writer_properties(self) -> WriterProperties:
        return writer_properties(self.parquet_compression)

    def table_configuration(self) -> dict[str, str | None]:
        """Delta table properties set when waxlake creates a table.

        The log retention is short on purpose: every commit lists `_delta_log`, so its size is
        what makes commits slow as a table ages (47 ms at 3,000 log files, 10 ms at 70). The
        `txn` markers live on in checkpoints; only time travel beyond the retention is lost.
        """
        return {
            "delta.checkpointInterval": str(self.checkpoint_interval),
            "delta.logRetentionDuration": self.log_retention,
            "delta.enableExpiredLogCleanup": "true",
            "delta.deletedFileRetentionDuration": f"interval {self.vacuum_retention_hours} hours",
        }


class TableMaintenance:
    """Runs compaction, log cleanup and vacuum after the commit that takes the table to a
    multiple of their intervals. The table's version, not this writer's count of commits: a job
    restarted before it made that many commits of its own (bounded runs, exit 75, pod
    restarts) would never reach an interval; and of the processes of a cluster writing one
    table, only the one whose commit made that version runs them."""

    def __init__(self, uri: str, policy: MaintenancePolicy) -> None:
        self._uri = uri
        self._policy = policy

    def after_commit(self, table: DeltaTable) -> None:
        version = table.version()
        policy = self._policy

        def due(every: int) -> bool:
            return every > 0 and version % every == 0

        if due(policy.compact_every_commits):
            self._run("compaction", lambda: self._compact(table))
        if due(policy.checkpoint_interval):
            self._run("log cleanup", lambda: self._cleanup_log(table))
        if due(policy.vacuum_every_commits):
            self._run("vacuum", lambda: self._vacuum(table))

    def _compact(self, table: DeltaTable) -> str:
        metrics = table.optimize.compact(
            target_size=self._policy.compact_target_bytes,
            writer_properties=self._policy.writer_properties(),
        )
        return f"{metrics.get('numFilesRemoved', 0)} files into {metrics.get('numFilesAdded', 0)}"

    def _vacuum(self, table: DeltaTable) -> str:
        removed = table.vacuum(
            retention_hours=self._policy.vacuum_retention_hours,
            dry_run=False,
            enforce_retention_duration=False,
        )
        return f"{len(removed)} unreferenced files deleted"

    def _cleanup_log(self, table: DeltaTable) -> str:
        table.cleanup_metadata()
        return "log entries older than the retention removed"

    def _run(self, what: str, step: Callable[[], str]) -> None:
        started = time.perf_counter()
        try:
            outcome = step()
        except (DeltaError, OSError) as exc:
            log.warning("%s: %s failed, will retry at the next interval: %s", self._uri, what, exc)
            return
        log.info(
            "%s: %s: %s, %.0f ms", self._uri, what, outcome, (time.perf_counter() - started) * 1000
        )
