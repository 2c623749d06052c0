"""Appending to a local table through pyarrow's Parquet writer and a Delta transaction.

Why not `write_deltalake`: delta-rs splits a partitioned write by partition value, copying every
row, and that split cost about as much as the encoding (`bench_parquet.py`, 1 KB rows, the same
properties: 1.31 CPU-µs a row, against 0.71 here; README, "Parquet writer settings"). The job's
rows arrive in chunks of one Kafka partition each (a poll is one partition), so each partition's
file is written straight from its chunks, without a copy. The add actions (with the statistics
delta-rs would write) and the `txn` markers then go in one commit against the same snapshot, so
conflicts are detected as before. Object stores and tables laid out by something else keep
`write_deltalake`.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction, RemoveAction

from connectors.columns import only_value, same_type
from connectors.delta.parquet import (
    NO_DICTIONARY,
    OPAQUE_COLUMNS,
    parse_compression,
    pyarrow_codec,
)
from connectors.kafka.records import PARTITION_COLUMNS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATS_STRING_LENGTH = 32
"""Longer strings get no min/max (a truncated max would need rounding up; omitting is exact)."""


def fitted(table: DeltaTable, rows: pa.Table, table_schema: pa.Schema) -> pa.Table | None:
    """`rows` as this path takes them (the table's column order), or None where only
    `write_deltalake` will do: an object store, a table laid out by something else, rows with
    other columns or types (new columns need delta-rs's schema merge; a type it would refuse
    must stay refused), or nulls in a column the table declares not null."""
    uri = table.table_uri
    if "://" in uri and not uri.startswith("file://"):
        return None
    if table.metadata().partition_columns != PARTITION_COLUMNS:
        return None
    if sorted(rows.schema.names) != sorted(table_schema.names):
        return None
    rows = rows.select(table_schema.names)
    for column, field in zip(rows.columns, table_schema, strict=True):
        if not same_type(column.type, field.type):
            return None
        if not field.nullable and column.null_count:
            return None
    return rows


class ParquetAppender:
    """Writes one file per Kafka partition of a flush and commits them with the flush's markers."""

    def __init__(self, compression: str) -> None:
        """`compression`: as `WAXLAKE_PARQUET_COMPRESSION` (`lz4_raw`, `zstd:1`, ...)."""
        self._codec, self._level = pyarrow_codec(compression)
        self._suffix = parse_compression(compression)[0].replace("_", "")

    def append(
        self,
        table: DeltaTable,
        rows: pa.Table,
        table_schema: pa.Schema,
        commit: CommitProperties | None,
    ) -> None:
        """Land `rows` (the table's columns, any chunking) and `commit`'s markers in one commit.

        A commit that lost to another writer removes its files again (nothing points at them);
        after any other failure they stay (the commit may have landed) for VACUUM to judge."""
        rows = rows.cast(table_schema) if rows.schema != table_schema else rows
        root = _local_path(table.table_uri)
        written: list[str] = []
        try:
            actions: list[AddAction | RemoveAction] = []
            for partition, chunks in _by_partition(rows).items():
                data = pa.Table.from_batches(chunks, schema=table_schema).drop_columns(
                    PARTITION_COLUMNS
                )
                relative = f"partition={partition}/part-{uuid.uuid4()}-c000.{self._suffix}.parquet"
                path = os.path.join(root, relative)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                written.append(path)
                self._write(data, path)
                actions.append(_add_action(relative, path, partition, data))
            table.create_write_transaction(
                actions,
                mode="append",
                schema=table.schema(),
                partition_by=PARTITION_COLUMNS,
                commit_properties=commit,
            )
        except CommitFailedError:
            for path in written:
                if os.path.exists(path):
                    os.remove(path)
            raise
        table.update_incremental()

    def _write(self, data: pa.Table, path: str) -> None:
        names = data.schema.names
        pq.write_table(
            data,
            path,
            compression=self._codec,
            compression_level=self._level,
            use_dictionary=[c for c in names if c not in NO_DICTIONARY],
            write_statistics=_stats_columns(data.schema),
        )


def _by_partition(rows: pa.Table) -> dict[int, list[pa.RecordBatch]]:
    """The record batches of each Kafka partition; a chunk of one partition is not copied."""
    groups: dict[int, list[pa.RecordBatch]] = defaultdict(list)
    for chunk in rows.to_batches():
        if chunk.num_rows == 0:
            continue
        partition = only_value(chunk["partition"])
        if partition is not None:
            groups[partition].append(chunk)
            continue
        for partition in pc.unique(chunk["partition"]).to_pylist():
            groups[partition].append(chunk.filter(pc.equal(chunk["partition"], partition)))
    return groups


def _stats_columns(schema: pa.Schema) -> list[str]:
    """Columns with statistics: as delta-rs, primitive ones, but not the opaque bytes."""
    return [
        f.name for f in schema if f.name not in OPAQUE_COLUMNS and not pa.types.is_nested(f.type)
    ]


def _add_action(relative: str, path: str, partition: int, data: pa.Table) -> AddAction:
    return AddAction(
        path=relative,
        size=os.path.getsize(path),
        partition_values={"partition": str(partition)},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=json.dumps(file_stats(data), separators=(",", ":")),
    )


def file_stats(data: pa.Table) -> dict[str, Any]:
    """Delta file statistics (`numRecords`, `minValues`, `maxValues`, `nullCount`) of `data`."""
    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in _stats_columns(data.schema):
        column = data[name]
        nulls[name] = column.null_count
        if column.null_count == len(column):
            continue
        edges = _bounds(column)
        if edges is not None:
            low[name], high[name] = edges
    return {"numRecords": data.num_rows, "minValues": low, "maxValues": high, "nullCount": nulls}


def _bounds(column: pa.ChunkedArray) -> tuple[Any, Any] | None:
    """JSON min/max as Delta keeps them; None where no exact bound can be written."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        micros = pc.min_max(column.cast(pa.timestamp("us", tz=kind.tz)).cast(pa.int64()))
        return _iso(micros["min"].as_py()), _iso(micros["max"].as_py())
    bounds = pc.min_max(column)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        short = len(low) <= STATS_STRING_LENGTH and len(high) <= STATS_STRING_LENGTH
        return (low, high) if short else None
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return low, high
    if pa.types.is_floating(kind) and not (math.isnan(low) or math.isnan(high)):
        return low, high
    return None


def _iso(micros: int) -> str:
    """As delta-rs writes it: RFC 3339 truncated to milliseconds (readers add a millisecond
    to a max, as Spark does), the fraction only where the moment has one."""
    moment = _EPOCH + timedelta(microseconds=micros)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}Z" if moment.microsecond else f"{text}Z"


def _local_path(uri: str) -> str:
    """The directory of a local table's URI (delta-rs gives `file:///...`, percent-encoded)."""
    return unquote(urlparse(uri).path) if uri.startswith("file://") else uri
