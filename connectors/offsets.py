"""Where each Kafka partition's progress is recorded: Delta `txn` markers and the Kafka group.

The table's `txn` marker (app id per topic and partition, version = last offset handled) is
committed atomically with the rows, so it is the truth for exactly-once. Integrity rule: a marker
only ever grows, and it covers every offset up to it (landed in the table, in its dead letters, or
recorded as lost). Beside it a second `txn` keeps the Kafka timestamp of the record at the marker,
so a restart can tell that the record Kafka now has at that offset is the one that landed.
The Kafka group offset is what standard lag tools read; it is the position of record for the
other two guarantees.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
from confluent_kafka import Consumer, KafkaException, TopicPartition
from deltalake import CommitProperties, DeltaTable, Transaction

from connectors.config import Guarantee

log = logging.getLogger(__name__)

APP_ID_PREFIX = "waxlake"


def app_id(topic: str, partition: int) -> str:
    """The Delta `txn` app id that carries the last offset written for one Kafka partition."""
    return f"{APP_ID_PREFIX}:{topic}:{partition}"


def fingerprint_app_id(topic: str, partition: int) -> str:
    """The `txn` app id whose version is the Kafka timestamp (ms) of the record at the marker."""
    return f"{app_id(topic, partition)}:timestamp"


@dataclass(frozen=True)
class Mark:
    """How far a flush covers one partition: its last offset and that record's timestamp."""

    last_offset: int
    timestamp_ms: int  # -1: the record carries no timestamp


def coverage(raw: pa.Table) -> dict[int, Mark]:
    """Per partition of `raw` (rows of each partition in offset order): its last record."""
    if raw.num_rows == 0:
        return {}
    stamps = raw["timestamp"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    data = pa.table({"partition": raw["partition"], "offset": raw["offset"], "ts": stamps})
    grouped = data.group_by("partition", use_threads=False).aggregate(
        [("offset", "last"), ("ts", "last")]
    )
    columns = (grouped[name].to_pylist() for name in ("partition", "offset_last", "ts_last"))
    return {
        int(p): Mark(int(o), -1 if t is None else int(t)) for p, o, t in zip(*columns, strict=True)
    }


def marker_commit(topic: str, marks: Mapping[int, Mark]) -> CommitProperties:
    """`txn` actions that move the markers of `marks` (and their fingerprints) in one commit."""
    transactions = []
    for partition, mark in sorted(marks.items()):
        transactions.append(Transaction(app_id=app_id(topic, partition), version=mark.last_offset))
        transactions.append(
            Transaction(app_id=fingerprint_app_id(topic, partition), version=mark.timestamp_ms)
        )
    return CommitProperties(app_transactions=transactions)


def table_fingerprint(table: DeltaTable, topic: str, partition: int) -> int:
    """Kafka timestamp of the record at the partition's marker; -1 if unknown."""
    version = table.transaction_version(fingerprint_app_id(topic, partition))
    return -1 if version is None else version


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


def group_offsets(consumer: Consumer, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The group's committed next offset per partition, where it has one."""
    wanted = [TopicPartition(topic, p) for p in partitions]
    committed = consumer.committed(wanted, timeout=30)
    return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}


def commit_group_offsets(consumer: Consumer, topic: str, next_offsets: Mapping[int, int]) -> None:
    """Synchronously commit `next_offsets` (partition -> next offset to read) for the group."""
    if not next_offsets:
        return
    result = consumer.commit(
        offsets=[TopicPartition(topic, p, o) for p, o in next_offsets.items()],
        asynchronous=False,
    )
    for tp in result or []:
        if tp.error is not None:
            raise KafkaException(tp.error)


def start_offset(
    guarantee: Guarantee,
    *,
    table_marker: int | None,
    resume_state: int | None,
    group_offset: int | None,
) -> int | None:
    """The next offset to read for one partition, or None for the earliest one.

    exactly-once: the table is what users read, so its marker wins; then the resume state.
    The other two: the furthest of the resume state and the group offset. Both are written only
    at points where the guarantee allows skipping what is behind them (after the write for
    at-least-once, before it for at-most-once), so taking the furthest never loses more than the
    guarantee permits and for at-most-once it is what prevents duplicates.
    """
    if guarantee is Guarantee.EXACTLY_ONCE:
        if table_marker is not None:
            return table_marker + 1
        return resume_state
    known = [o for o in (resume_state, group_offset) if o is not None]
    return max(known) if known else None
