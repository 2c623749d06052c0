"""The record of offsets Kafka lost before they landed: `<root>/_data_loss/<topic>`.

It also keeps each partition's origin: where the job first started reading a partition that had
no position (a new table), committed before the first record is read, so that a crash before
anything landed still leaves a position whose loss can be told. At a topic's first start the
origins of all its partitions are recorded together, in one commit (one per partition would make
the first start of a job over a thousand partitions take minutes), with `auto.offset.reset`; a
partition without one later was added since, and starts at offset 0, where every new partition
begins. Origins and gaps are offsets of one topic ID (table property `waxlake.topicId.<topic>`):
a recreated topic's offsets start again, and the old origins would skip its first records.

Integrity rule: every lost offset is in exactly one recorded gap, however often the loss is seen
again (a replay after a crash sees the same gap, often wider: retention kept deleting). Before
writing, the gaps already recorded for the partition are subtracted from the new one; the commit
carries a `txn` action for the partition and is made against the snapshot those gaps were read
from, so two instances recording at once conflict and the loser re-reads and finds nothing new.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from connectors.delta import markers as offsets

log = logging.getLogger(__name__)

DATA_LOSS_DIR = "_data_loss"
_ATTEMPTS = 20

GAP_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("first_offset", pa.int64(), nullable=False),
        pa.field("last_offset", pa.int64(), nullable=False),
        pa.field("records", pa.int64(), nullable=False),
        pa.field("detected_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("guarantee", pa.string(), nullable=False),
    ]
)


def gap_uri(table_root: str, topic: str) -> str:
    return f"{table_root}/{DATA_LOSS_DIR}/{topic}"


@dataclass(frozen=True)
class Gap:
    """Offsets `first`..`last` (inclusive) of one partition that will never land."""

    topic: str
    partition: int
    first: int
    last: int
    reason: str

    @property
    def records(self) -> int:
        return self.last - self.first + 1


def subtract(first: int, last: int, recorded: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `first..last` that no interval in `recorded` covers."""
    parts: list[tuple[int, int]] = []
    start = first
    for low, high in sorted(recorded):
        if high < start or low > last:
            continue
        if low > start:
            parts.append((start, low - 1))
        start = max(start, high + 1)
    if start <= last:
        parts.append((start, last))
    return parts


class GapLog:
    """Records gaps of one topic exactly once (see the module doc)."""

    def __init__(
        self,
        table_root: str,
        topic: str,
        storage_options: Mapping[str, str],
        topic_id: str | None = None,
    ) -> None:
        self.uri = gap_uri(table_root, topic)
        self._topic = topic
        self._storage = dict(storage_options) or None
        # Stamped on the table when it is created (connectors.kafka.topic_ids checks it).
        self._configuration = {offsets.TOPIC_ID_PROPERTY + topic: topic_id} if topic_id else {}

    def record(self, gap: Gap, guarantee: str) -> int:
        """Record the offsets of `gap` not recorded yet; return how many that was."""
        for attempt in range(1, _ATTEMPTS + 1):
            table = self._table()
            recorded = recorded_ranges(table, gap.partition)
            parts = subtract(gap.first, gap.last, recorded)
            if not parts:
                return 0
            now = datetime.now(UTC)
            rows = pa.Table.from_pylist(
                [
                    {
                        "topic": gap.topic,
                        "partition": gap.partition,
                        "first_offset": first,
                        "last_offset": last,
                        "records": last - first + 1,
                        "detected_at": now,
                        "reason": gap.reason,
                        "guarantee": guarantee,
                    }
                    for first, last in parts
                ],
                schema=GAP_SCHEMA,
            )
            highest = max([gap.last, *(high for _, high in recorded)])
            txn = Transaction(app_id=offsets.app_id(self._topic, gap.partition), version=highest)
            try:
                write_deltalake(
                    table,
                    rows,
                    mode="append",
                    commit_properties=CommitProperties(app_transactions=[txn]),
                )
            except CommitFailedError:
                if attempt == _ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)
                continue
            return sum(last - first + 1 for first, last in parts)
        raise AssertionError("unreachable")

    def unrecorded(self, gap: Gap) -> list[tuple[int, int]]:
        """The parts of `gap` no recorded gap covers (all of it when none is recorded)."""
        table = offsets.open_table(self.uri, self._storage or {})
        recorded = [] if table is None else recorded_ranges(table, gap.partition)
        return subtract(gap.first, gap.last, recorded)

    def origins(
        self,
        partitions: Sequence[int],
        resolve: Callable[[list[int]], Mapping[int, int]],
        listed: Sequence[int] = (),
        began: Callable[[], bool] = lambda: False,
    ) -> dict[int, int]:
        """Each partition's origin. At the topic's first start every partition (`partitions` and
        the topic's others, `listed`) is `resolve()`d and recorded, with a topic-wide `txn`
        saying that it began; once it has (or `began()`: its tables hold markers), a partition
        without an origin was added since and starts at 0. One commit, against the snapshot that
        showed them missing, so an instance that recorded some first makes this one conflict
        and re-read. A new table is created with them in its first version."""
        everyone = sorted({*partitions, *listed})
        for attempt in range(1, _ATTEMPTS + 1):
            table = offsets.open_table(self.uri, self._storage or {})
            known = {} if table is None else self._known_origins(table, partitions)
            missing = [p for p in partitions if p not in known]
            if not missing:
                return known
            first = table is None or not self._began(table, everyone)
            if first and not began():
                found = resolve([p for p in everyone if p not in known])
                resolved = {p: int(o) for p, o in found.items()}
            else:
                resolved = dict.fromkeys(missing, 0)
                log.info(
                    "topic %s partitions %s: added after the job began reading the topic, so "
                    "read from offset 0 (where a new partition starts)",
                    self._topic,
                    ", ".join(map(str, missing)),
                )
            txns = [Transaction(app_id=self._origin_app(p), version=o) for p, o in resolved.items()]
            txns.append(Transaction(app_id=self._began_app, version=len(everyone)))
            commit = CommitProperties(app_transactions=txns)
            try:
                if table is None:
                    DeltaTable.create(
                        self.uri,
                        GAP_SCHEMA,
                        mode="error",
                        storage_options=self._storage,
                        commit_properties=commit,
                    )
                    self._stamp()
                else:
                    write_deltalake(
                        table, GAP_SCHEMA.empty_table(), mode="append", commit_properties=commit
                    )
            except DeltaError as exc:
                # Another instance recorded origins (or created the table) first: re-read.
                lost_race = isinstance(exc, CommitFailedError) or (
                    table is None and offsets.open_table(self.uri, self._storage or {}) is not None
                )
                if attempt == _ATTEMPTS or not lost_race:
                    raise
                continue
            return known | {p: resolved[p] for p in missing}
        raise AssertionError("unreachable")

    @property
    def _began_app(self) -> str:
        return f"{offsets.APP_ID_PREFIX}:{self._topic}:began"

    def _began(self, table: DeltaTable, partitions: Sequence[int]) -> bool:
        """Origins were recorded for the topic before (tables older than the topic-wide `txn`
        hold only the partitions' own)."""
        if table.transaction_version(self._began_app) is not None:
            return True
        return bool(self._known_origins(table, partitions))

    def _origin_app(self, partition: int) -> str:
        return f"{offsets.app_id(self._topic, partition)}:origin"

    def _known_origins(self, table: DeltaTable, partitions: Sequence[int]) -> dict[int, int]:
        known = {}
        for partition in partitions:
            version = table.transaction_version(self._origin_app(partition))
            if version is not None:
                known[partition] = version
        return known

    def _table(self) -> DeltaTable:
        table = offsets.open_table(self.uri, self._storage or {})
        if table is None:
            DeltaTable.create(self.uri, GAP_SCHEMA, mode="ignore", storage_options=self._storage)
            table = self._stamp()
        return table

    def _stamp(self) -> DeltaTable:
        """The table just created, stamped with the topic ID (delta-rs takes no custom property
        at creation)."""
        table = offsets.open_table(self.uri, self._storage or {})
        assert table is not None
        if self._configuration:
            table.alter.set_table_properties(self._configuration, raise_if_not_exists=False)
        return table


def recorded_ranges(table: DeltaTable, partition: int) -> list[tuple[int, int]]:
    rows = table.to_pyarrow_dataset().to_table(
        columns=["first_offset", "last_offset"], filter=pc.field("partition") == partition
    )
    return list(zip(rows["first_offset"].to_pylist(), rows["last_offset"].to_pylist(), strict=True))


def read_gaps(table_root: str, topic: str, storage_options: Mapping[str, str]) -> pa.Table:
    """Every gap recorded for `topic` (empty if none), by partition and offset."""
    table = offsets.open_table(gap_uri(table_root, topic), storage_options)
    if table is None:
        return GAP_SCHEMA.empty_table()
    return table.to_pyarrow_table().sort_by(
        [("partition", "ascending"), ("first_offset", "ascending")]
    )
