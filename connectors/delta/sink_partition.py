"""One table's Bytewax sink partition: buffers `KafkaBatch`es and commits them.

A table's buffer is committed at each epoch snapshot (and before, at the size and age limits);
the snapshot waits for every commit it covers, so Bytewax's recovery state never runs ahead of
what is durable in the table. Commits run on commit threads the tables share (`SharedClients`),
so the worker keeps reading (Parquet is encoded without the GIL): one flush of a table in
flight at a time, in order; a full buffer waits for the one before (back-pressure on the
source); a failed commit fails the job at the next batch or snapshot. The order of the
table write and the Kafka group commit is the guarantee (`connectors.guarantees`). Dead letters
are written just before the rows: the table's markers decide where reading resumes, so every
dead letter below them must already be durable. The partition's snapshot is its table's ID
(`connectors.delta.table_identity`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

from bytewax.outputs import StatefulSinkPartition
from confluent_kafka import KafkaException
from deltalake.exceptions import DeltaError

from connectors import guarantees
from connectors.batch import KafkaBatch, StepRuleError, check_rule, with_coordinate_types
from connectors.config import ConfigError, Settings
from connectors.delta.buffer import Flush, TableBuffer
from connectors.delta.commit_report import report_commit
from connectors.delta.dead_letters import dead_letter_uri, without_dead_letters
from connectors.delta.shared_clients import SharedClients
from connectors.delta.table_identity import check_identity, group_metadata, table_id
from connectors.delta.table_writer import CommitResult, DeltaTableWriter
from connectors.delta.writers import TableWriter, WriterFactory, dead_letter_writer, table_writer
from connectors.errors import (
    ConcurrentWriteError,
    TableWriteError,
    commit_failure,
    fail_at_exit,
)
from connectors.kafka import topic_ids
from connectors.ops import metrics
from connectors.ops.progress import PROGRESS

log = logging.getLogger(__name__)


class TableSinkPartition(StatefulSinkPartition[KafkaBatch, str | None]):
    """Buffers and commits one table. The table holds the progress; the snapshot is the table's
    ID, so that a table deleted or replaced under a kept recovery store is caught at start."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        owns_group: Callable[[str], bool],
        make_writer: WriterFactory | None,
        shared: SharedClients,
        resume_state: str | None = None,
        *,
        made_now: bool = False,
    ) -> None:
        self._settings = settings
        self._name = name
        self._uri = settings.table_uri(name)
        self._table_id = check_identity(settings, self._uri, resume_state, made_now=made_now)
        self._look_up_id = self._table_id is None  # at the next snapshot, and after a commit
        self._group_sent_without_id = False
        self._owns_group = owns_group
        self._make_writer = make_writer
        self._topic: str | None = None
        self._writer: TableWriter | None = None
        self._dead: DeltaTableWriter | None = None
        self._buffer = TableBuffer()
        self._covered: dict[int, int] = {}  # per partition, the last offset a batch covered
        self._shared = shared
        shared.join()
        self._in_flight: Future[None] | None = None
        self._failed = False  # something raised: the job is stopping, commit nothing more

    def write_batch(self, values: list[KafkaBatch]) -> None:
        with self._stops_the_job():
            self._check_in_flight()
            for batch in values:
                check_rule(batch, "before the sink")
                self._check_covered_once(batch)
                typed = with_coordinate_types(batch.rows)
                if typed is not batch.rows:  # a step widened them
                    batch = batch.with_rows(typed)
                self._bind(batch.topic)
                self._buffer.add(batch)
                metrics.BUFFERED_ROWS.labels(batch.topic).set(self._buffer.row_count)
            # Only after the whole call: a step that split a batch in two gets caught above
            # before a commit of the first half could move the marker past the second.
            if self._full():
                self._flush(wait=False)

    def _check_covered_once(self, batch: KafkaBatch) -> None:
        """A batch's coverage moves its partition's marker, so each offset may reach a table
        in one batch only: a second batch of them would land below the marker (dropped as
        already there, or landed twice). Polls of a partition cover rising offsets."""
        reached = self._covered.get(batch.partition, -1)
        if batch.first_offset <= reached:
            raise StepRuleError(
                f"step before the sink on {batch.describe()}: these offsets already reached "
                f"table {self._name} in another batch; a step must give one batch for each "
                "batch it gets (filter rows within it, send rows to several tables with "
                "`route`), README 'Write your own flow'"
            )
        self._covered[batch.partition] = batch.last_offset

    @contextmanager
    def _stops_the_job(self) -> Iterator[None]:
        """What raises here stops the job, and Bytewax then closes this partition while it
        unwinds: a second error in `close` would abort the process without the job's last line,
        so after a failure `close` commits nothing more."""
        try:
            yield
        except BaseException:
            self._failed = True
            raise

    def _full(self) -> bool:
        """Commit before the epoch ends: the buffer is too big, or (with a commit interval) its
        oldest record has waited long enough."""
        settings, buffer = self._settings, self._buffer
        interval = settings.commit_interval_ms / 1000
        return (
            buffer.row_count >= settings.max_batch_rows
            or buffer.bytes >= settings.max_batch_bytes
            or (interval > 0 and time.monotonic() - buffer.since >= interval)
        )

    def snapshot(self) -> str | None:
        with self._stops_the_job():
            self._flush(wait=True)
        return self._known_table_id()

    def _known_table_id(self) -> str | None:
        """The table's ID, looked up once when it may have changed from none."""
        if self._look_up_id:
            self._table_id = table_id(self._uri, self._settings.storage_options)
            self._look_up_id = False
        return self._table_id

    def close(self) -> None:
        try:
            if not self._failed:  # after a failure Bytewax closes while it unwinds: no raising
                self._flush(wait=True)
        except Exception as exc:  # Bytewax may be unwinding from another partition's error
            fail_at_exit(exc)
        finally:
            self._shared.leave()
            PROGRESS.close()

    def _bind(self, topic: str) -> None:
        """A table holds the records of one topic (its markers are per partition)."""
        if self._topic is None:
            self._topic = topic
            return
        if topic != self._topic:
            raise ConfigError(
                f"table {self._name} gets records of topics {self._topic} and {topic}; a table "
                "holds one topic's records (its markers are per partition): route them apart"
            )

    def _flush(self, *, wait: bool) -> None:
        """Hand the buffer to the committer thread, after the flush before it is done."""
        self._await_in_flight()
        if self._buffer and self._topic is not None:
            self._in_flight = self._shared.submit(
                self._commit_or_fail, self._topic, self._buffer.take(self._name)
            )
        if wait:
            self._await_in_flight()

    def _await_in_flight(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None and in_flight.exception() is not None:
            in_flight.result()  # a failed commit raises here, on the worker: the job stops

    def _check_in_flight(self) -> None:
        """A commit that failed in the background stops the job at the next batch."""
        if self._in_flight is not None and self._in_flight.done():
            self._await_in_flight()

    def _commit_or_fail(self, topic: str, flush: Flush) -> None:
        try:
            self._commit(topic, flush)
        except (DeltaError, OSError, ConcurrentWriteError, KafkaException) as exc:
            raise TableWriteError(commit_failure(topic, self._uri, exc)) from exc

    def _commit(self, topic: str, flush: Flush) -> None:
        started = time.perf_counter()
        topic_ids.check_unchanged(self._shared.admin, topic)
        writer, dead_writer = self._writers(topic)
        dead_result = None

        def write(exactly_once: bool) -> CommitResult:
            nonlocal dead_result
            if exactly_once:
                if flush.dead.num_rows:
                    dead_result = dead_writer.write_exactly_once(flush.dead)
                rows = without_dead_letters(
                    [dead_writer.marker_key, topic], dead_writer.current(), flush.rows
                )
                result = writer.write_exactly_once(rows, flush.marks)
            else:
                if flush.dead.num_rows:
                    dead_result = dead_writer.append(flush.dead)
                result = writer.append(flush.rows)
            if result.version is not None and self._table_id is None:
                self._look_up_id = True  # the commit may have created the table
            return result

        result = guarantees.deliver(
            self._settings.guarantee,
            write,
            commit_group=lambda: self._commit_group(topic, flush, warn=False),
            commit_group_after=lambda: self._commit_group(topic, flush, warn=True),
        )
        if self._group_sent_without_id and self._known_table_id() is not None:
            # At-most-once moved the group before the write created the table: name it now.
            self._commit_group(topic, flush, warn=True)
        elapsed = time.perf_counter() - started
        dead_uri = dead_letter_uri(self._settings.table_root, topic)
        report_commit(topic, self._uri, dead_uri, flush, result, dead_result, elapsed)

    def _commit_group(self, topic: str, flush: Flush, *, warn: bool) -> None:
        """The group offsets of the topic's first table (the others would move them back).
        After the write they are for lag tools, the data is safe: a failure only warns."""
        if not self._owns_group(self._name):
            return
        known = self._known_table_id()
        self._group_sent_without_id = known is None
        try:
            self._shared.commit_group_offsets(topic, flush.next_offsets(), group_metadata(known))
        except KafkaException as exc:
            if not warn:
                raise
            metrics.GROUP_COMMIT_FAILURES.labels(topic).inc()
            log.warning(
                "could not commit offsets of %s to group %s: %s",
                topic,
                self._settings.group_id,
                exc,
            )

    def _writers(self, topic: str) -> tuple[TableWriter, DeltaTableWriter]:
        if self._writer is None or self._dead is None:
            self._writer = table_writer(self._settings, self._make_writer, self._uri, topic)
            self._dead = dead_letter_writer(self._settings, topic, self._name)
        return self._writer, self._dead
