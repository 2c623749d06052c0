"""`waxlake status`: what landed in each table and how far it is behind Kafka.

Read-only and independent of the job: it reads table metadata (never data files), the `txn`
markers, the consumer group's offsets (the position under at-least-once and at-most-once) and the
brokers' end offsets. It never creates tables or topics nor commits offsets, so
it is safe to run beside the job or while the job is down.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from deltalake import DeltaTable

from connectors.config import ConfigError, Settings
from connectors.delta import markers as offsets
from connectors.delta.dead_letters import dead_letter_uri
from connectors.delta.gaps import read_gaps
from connectors.kafka.client import make_consumer
from connectors.kafka.topic_ids import table_topic
from connectors.ops.command import CommandError, command_settings
from connectors.ops.status_report import GapStatus, PartitionStatus, TableStatus, print_human


def _rows(table: DeltaTable) -> int | None:
    """Row count from the log's file statistics, so no data file is read (None if unknown)."""
    counts = pa.table(table.get_add_actions(flatten=True))["num_records"]
    if counts.null_count:
        return None
    total = pc.sum(counts).as_py()
    return int(total or 0)


def _last_commit(table: DeltaTable) -> str | None:
    history = table.history(1)
    if not history or "timestamp" not in history[0]:
        return None
    stamp = datetime.fromtimestamp(history[0]["timestamp"] / 1000, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _table_status(settings: Settings, name: str, table: DeltaTable, topic: str) -> TableStatus:
    storage = settings.storage_options
    dead = offsets.open_table(dead_letter_uri(settings.table_root, topic), storage)
    present = _kafka_partitions(table)
    markers = offsets.table_markers(table, topic, present)
    gaps = [
        GapStatus(
            partition=row["partition"],
            first_offset=row["first_offset"],
            last_offset=row["last_offset"],
            records=row["records"],
            detected_at=row["detected_at"].isoformat(timespec="milliseconds"),
            reason=row["reason"],
        )
        for row in read_gaps(settings.table_root, topic, storage).to_pylist()
    ]
    return TableStatus(
        table=name,
        topic=topic,
        uri=settings.table_uri(name),
        version=table.version(),
        rows=_rows(table),
        last_commit=_last_commit(table),
        dead_letters=(_rows(dead) or 0) if dead is not None else 0,
        partitions=[_by_marker(p, markers.get(p)) for p in sorted(present)],
        lost_records=sum(g.records for g in gaps),
        gaps=gaps,
    )


def _by_marker(partition: int, marker: int | None) -> PartitionStatus:
    return PartitionStatus(partition, marker, committed_by=None if marker is None else "marker")


def _kafka_partitions(table: DeltaTable) -> set[int]:
    """The Kafka partitions the table holds rows of: its Delta partitions for an append table,
    its `partition` column for a current-state table (partitioned by key bucket)."""
    if "partition" in table.metadata().partition_columns:
        return {int(p["partition"]) for p in table.partitions() if p.get("partition") is not None}
    column = table.to_pyarrow_dataset().to_table(columns=["partition"])["partition"]
    return {int(p) for p in pc.unique(column).to_pylist() if p is not None}


def _add_broker_offsets(
    settings: Settings, tables: list[TableStatus], opened: dict[str, DeltaTable], timeout: float
) -> None:
    """Fill in end offsets and lag (and the markers of partitions without rows); on a broker
    failure leave them unknown and warn once."""
    consumer = make_consumer(settings, what="status", log_level=0)
    try:
        metadata = consumer.list_topics(timeout=timeout)  # all topics: never auto-creates one
        for status in tables:
            meta = metadata.topics.get(status.topic)
            if meta is None or meta.error is not None:
                print(
                    f"waxlake: warning: topic {status.topic} not found on the broker",
                    file=sys.stderr,
                )
                continue
            known = {p.partition: p for p in status.partitions}
            rowless = sorted(set(meta.partitions) - set(known))
            markers = offsets.table_markers(opened[status.table], status.topic, rowless)
            for partition in rowless:
                status.partitions.append(_by_marker(partition, markers.get(partition)))
            status.partitions.sort(key=lambda p: p.partition)
            _add_group_offsets(settings, consumer, status, timeout)
            for part in status.partitions:
                tp = TopicPartition(status.topic, part.partition)
                watermarks = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
                if watermarks is None:  # older clients return None on a timeout
                    raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
                _add_lag(status, part, watermarks[1])
    except KafkaException as exc:
        print(
            f"waxlake: warning: Kafka at {settings.bootstrap_servers} did not answer within "
            f"{timeout:g} s ({exc.args[0].str()}); end offsets and lag unknown",
            file=sys.stderr,
        )
    finally:
        consumer.close()


def _add_group_offsets(
    settings: Settings, consumer: Consumer, status: TableStatus, timeout: float
) -> None:
    """Positions of partitions without a marker from the consumer group: at-least-once and
    at-most-once keep theirs there (read only; `WAXLAKE_GROUP_ID` names the group)."""
    unmarked = [p for p in status.partitions if p.committed_offset is None]
    if not unmarked:
        return
    wanted = [TopicPartition(status.topic, p.partition) for p in unmarked]
    for part, tp in zip(unmarked, consumer.committed(wanted, timeout=timeout), strict=True):
        if tp.offset >= 0:
            part.committed_offset, part.committed_by = tp.offset - 1, f"group {settings.group_id}"


def _add_lag(status: TableStatus, part: PartitionStatus, high: int) -> None:
    """Lag: the offsets after the position up to the log's end that are not recorded lost.
    A position past the end means the log was truncated or the topic recreated: said, no lag."""
    part.end_offset = high
    done = -1 if part.committed_offset is None else part.committed_offset
    if done >= high:
        part.lag = None
        print(
            f"waxlake: warning: {status.table} partition {part.partition}: the table has landed "
            f"up to offset {done} but the log ends at {high}: the log was truncated or the "
            "topic recreated (the job refuses to go on; see README 'When Kafka loses records')",
            file=sys.stderr,
        )
        return
    lost = sum(
        max(0, min(g.last_offset, high - 1) - max(g.first_offset, done + 1) + 1)
        for g in status.gaps
        if g.partition == part.partition
    )
    part.lag = max(0, high - done - 1 - lost)


def _tables_of(settings: Settings, name: str, local: bool) -> dict[str, tuple[DeltaTable, str]]:
    """The table `name`, or, under a local root without one, the tables holding topic `name`
    (a routed topic's tables are named otherwise); each with the topic it holds."""
    table = offsets.open_table(settings.table_uri(name), settings.storage_options)
    if table is not None:
        return {name: (table, table_topic(table, name))}
    if not local:
        return {}
    found = {}
    for other in _discover(settings.table_root):
        table = offsets.open_table(settings.table_uri(other), settings.storage_options)
        if table is not None and (topic := table_topic(table, other)) == name:
            found[other] = (table, topic)
    return found


def _discover(root: str) -> list[str]:
    """Topics of a local root: its subdirectories that are Delta tables (not `_...` ones)."""
    path = Path(root.removeprefix("file://"))
    if not path.is_dir():
        return []
    return sorted(
        d.name
        for d in path.iterdir()
        if d.is_dir() and not d.name.startswith("_") and DeltaTable.is_deltatable(str(d))
    )


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser("status", help="per table: version, rows, offsets, lag, gaps")
    status.add_argument("--root", help="table root (default: $WAXLAKE_TABLE_ROOT)")
    status.add_argument("--bootstrap-servers", help="default: $KAFKA_BOOTSTRAP_SERVERS")
    status.add_argument("--topics", help="comma-separated (default: $WAXLAKE_TOPICS or all)")
    status.add_argument(
        "--group",
        help="consumer group whose offsets are the position under at-least-once and "
        "at-most-once (default: $WAXLAKE_GROUP_ID)",
    )
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.add_argument("--timeout", type=float, default=10.0, help="seconds per broker call")


def run(args: argparse.Namespace) -> int:
    """`waxlake status`; returns the exit code."""
    if args.timeout <= 0:
        raise CommandError("--timeout must be positive (seconds per broker call)")
    settings = command_settings(
        table_root=args.root,
        bootstrap_servers=args.bootstrap_servers,
        topics=args.topics,
        group_id=args.group,
    )
    local = "://" not in settings.table_root or settings.table_root.startswith("file://")
    topics = settings.topics or (_discover(settings.table_root) if local else [])
    if not topics:
        print(f"waxlake: error: no tables found under {settings.table_root}", file=sys.stderr)
        return 1 if local else 2

    tables: list[TableStatus] = []
    opened: dict[str, DeltaTable] = {}
    missing = []
    for topic in topics:
        found = _tables_of(settings, topic, local)
        if not found:
            missing.append(topic)
        for name, (table, held) in found.items():
            opened[name] = table
            tables.append(_table_status(settings, name, table, held))
    if tables:
        logging.getLogger("connectors.kafka.client").setLevel(
            logging.CRITICAL
        )  # one warning is enough
        try:
            _add_broker_offsets(settings, tables, opened, args.timeout)
        except ConfigError as exc:
            print(f"waxlake: error: {exc}", file=sys.stderr)
            return 2
    if args.json:
        doc = {"root": settings.table_root, "tables": [asdict(t) for t in tables]}
        print(json.dumps(doc, indent=2))
    elif tables:
        print_human(settings.table_root, tables)
    for topic in missing:
        print(
            f"waxlake: error: no Delta table for topic {topic} at {settings.table_uri(topic)}",
            file=sys.stderr,
        )
    return 1 if missing else 0
