"""Where each Kafka partition's progress is recorded in a table: Delta `txn` markers.

The table's `txn` marker (app id per topic and partition, version = last offset handled) is
committed atomically with the rows, so it is the truth for exactly-once. Integrity rule: a marker
only ever grows, and it covers every offset up to it (landed in the table, in its dead letters, or
recorded as lost). Beside it two more `txn`s keep the offset and Kafka timestamp of the last
record read (the marker itself may be a transaction marker), so that a restart can tell that
the record Kafka now has at that offset is the one that was read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction

from connectors.columns import only_value

log = logging.getLogger(__name__)

APP_ID_PREFIX = "waxlake"
TOPIC_ID_PROPERTY = "waxlake.topicId."
"""Table property prefix: `waxlake.topicId.<topic>` is the Kafka topic ID a table's offsets are of."""


def app_id(topic: str, partition: int) -> str:
    """The Delta `txn` app id that carries the last offset written for one Kafka partition."""
    return f"{APP_ID_PREFIX}:{topic}:{partition}"


def fingerprint_app_id(topic: str, partition: int) -> str:
    """The `txn` app id whose version is the Kafka timestamp (ms) of the last record read."""
    return f"{app_id(topic, partition)}:timestamp"


def probe_app_id(topic: str, partition: int) -> str:
    """The `txn` app id whose version is the offset of the last record read."""
    return f"{app_id(topic, partition)}:probe"


@dataclass(frozen=True)
class Mark:
    """How far a flush covers one partition: its last offset, and the offset and timestamp of
    its last record (-1: none, or no timestamp)."""

    last_offset: int
    timestamp_ms: int = -1
    probe_offset: int = -1

    def merge(self, other: Mark) -> Mark:
        """The further of two marks (a record's probe goes with its mark)."""
        if other.last_offset < self.last_offset:
            other, self = self, other
        if other.probe_offset < 0:
            return Mark(other.last_offset, self.timestamp_ms, self.probe_offset)
        return other


def last_record(raw: pa.Table, partition: int) -> Mark:
    """The last record of one partition's poll (Mark(-1): none); `coverage` for one partition,
    without its sort and group-by where the poll is in offset order (as polls are)."""
    if raw.num_rows == 0:
        return Mark(-1)
    offsets = raw["offset"]
    last = offsets[-1].as_py()
    if pc.max(offsets).as_py() != last or only_value(raw["partition"]) != partition:
        return coverage(raw).get(partition, Mark(-1))
    stamp = raw["timestamp"].slice(raw.num_rows - 1).cast(pa.timestamp("ms", tz="UTC"))
    millis = stamp.cast(pa.int64())[0].as_py()
    return Mark(last, -1 if millis is None else millis, last)


def coverage(raw: pa.Table) -> dict[int, Mark]:
    """Per partition of `raw` (in any order): its last record, by offset."""
    if raw.num_rows == 0:
        return {}
    stamps = raw["timestamp"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    data = pa.table({"partition": raw["partition"], "offset": raw["offset"], "ts": stamps})
    data = data.sort_by([("partition", "ascending"), ("offset", "ascending")])
    grouped = data.group_by("partition", use_threads=False).aggregate(
        [("offset", "last"), ("ts", "last")]
    )
    columns = (grouped[name].to_pylist() for name in ("partition", "offset_last", "ts_last"))
    return {
        int(p): Mark(int(o), -1 if t is None else int(t), int(o))
        for p, o, t in zip(*columns, strict=True)
    }


def moved_app_id(topic: str, partition: int) -> str:
    """The marker an operator set with `waxlake move-marker` (the last one)."""
    return f"{app_id(topic, partition)}:moved"


def moved_group_app_id(topic: str, partition: int) -> str:
    """The marker `waxlake move-marker` also moved the consumer group's offset to (at-least-once
    and at-most-once resume from the group, not from the table's markers)."""
    return f"{app_id(topic, partition)}:moved-group"


def marker_commit(
    topic: str, marks: Mapping[int, Mark], *, moved: bool = False, group_moved: bool = False
) -> CommitProperties:
    """`txn` actions that move the markers of `marks` (and their fingerprints) in one commit.

    A mark without a record (only transaction markers were covered) keeps the last probe;
    `moved` (an operator moved the marker) drops it, the old record proving nothing, and
    records the move, so that the moved marker wins over the recovery store's position."""
    transactions = []
    for partition, mark in sorted(marks.items()):
        transactions.append(Transaction(app_id=app_id(topic, partition), version=mark.last_offset))
        if moved:
            transactions.append(
                Transaction(app_id=moved_app_id(topic, partition), version=mark.last_offset)
            )
        if group_moved:
            transactions.append(
                Transaction(app_id=moved_group_app_id(topic, partition), version=mark.last_offset)
            )
        if mark.probe_offset >= 0 or moved:
            transactions.append(
                Transaction(app_id=fingerprint_app_id(topic, partition), version=mark.timestamp_ms)
            )
            transactions.append(
                Transaction(app_id=probe_app_id(topic, partition), version=mark.probe_offset)
            )
    return CommitProperties(app_transactions=transactions)


def table_fingerprint(table: DeltaTable, topic: str, partition: int) -> tuple[int, int] | None:
    """(offset, Kafka timestamp) of the last record read before the marker; None if unknown."""
    stamp = table.transaction_version(fingerprint_app_id(topic, partition))
    probe = table.transaction_version(probe_app_id(topic, partition))
    if probe is None:  # tables from before the probe: the marker was the record
        probe = table.transaction_version(app_id(topic, partition))
    if stamp is None or probe is None or stamp < 0 or probe < 0:
        return None
    return probe, stamp


def was_moved(table: DeltaTable, topic: str, partition: int, marker: int) -> bool:
    """The table's `marker` is still the one `waxlake move-marker` set (no commit since)."""
    return table.transaction_version(moved_app_id(topic, partition)) == marker


def move_missed_the_group(table: DeltaTable, topic: str, partition: int) -> int | None:
    """The marker `waxlake move-marker` set without moving the group's offset (it ran as for
    exactly-once), or None. Without exactly-once the table's markers stay as the move left
    them, and the job resumes from the group and its recovery store, so such a move would go
    unheeded."""
    moved = table.transaction_version(moved_app_id(topic, partition))
    if moved is None or moved != table.transaction_version(app_id(topic, partition)):
        return None
    return (
        None if table.transaction_version(moved_group_app_id(topic, partition)) == moved else moved
    )


def highest_offsets(table: DeltaTable, partitions: Iterable[int]) -> dict[int, int]:
    """The highest offset among each partition's rows, for the partitions that have rows."""
    wanted = pa.array(sorted(set(partitions)), pa.int32())
    rows = table.to_pyarrow_dataset().to_table(
        columns=["partition", "offset"], filter=pc.field("partition").isin(wanted)
    )
    grouped = rows.group_by("partition", use_threads=False).aggregate([("offset", "max")])
    found = zip(grouped["partition"].to_pylist(), grouped["offset_max"].to_pylist(), strict=True)
    return {int(p): int(o) for p, o in found}


def highest_landed(
    uri: str, storage_options: Mapping[str, str], partitions: Iterable[int]
) -> dict[int, int]:
    """`highest_offsets` of the table at `uri`; none without a table."""
    table = open_table(uri, storage_options)
    return {} if table is None else highest_offsets(table, partitions)


def table_markers(table: DeltaTable, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """Last offset written per partition, for the partitions that have a marker."""
    markers = {}
    for partition in partitions:
        version = table.transaction_version(app_id(topic, partition))
        if version is not None:
            markers[partition] = version
    return markers


def open_table(uri: str, storage_options: Mapping[str, str]) -> DeltaTable | None:
    """The Delta table at `uri`, or None when there is none yet."""
    if not DeltaTable.is_deltatable(uri, storage_options=dict(storage_options) or None):
        return None
    return DeltaTable(uri, storage_options=dict(storage_options) or None)
