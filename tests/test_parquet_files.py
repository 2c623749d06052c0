"""waxlake's own Parquet files on real Delta tables: what delta-rs would have written, read back
by delta-rs and polars, statistics that prune right, markers in the same commit, and a conflict
that leaves no file behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from connectors.delta.markers import Mark, app_id, coverage, last_record, marker_commit
from connectors.delta.parquet import CODECS, writer_properties
from connectors.delta.parquet_files import ParquetAppender, file_stats, fitted
from connectors.kafka.records import PARTITION_COLUMNS, SCHEMA
from tests.test_table_writer import TOPIC, records


def create(uri: str) -> DeltaTable:
    DeltaTable.create(uri, SCHEMA, partition_by=PARTITION_COLUMNS)
    return DeltaTable(uri)


def arrow_schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def added_files(uri: str) -> dict[str, dict[str, Any]]:
    """Per partition value, the stats of the files added by the table's commits."""
    found: dict[str, dict[str, Any]] = {}
    for log in sorted(Path(uri, "_delta_log").glob("*.json")):
        for line in log.read_text().splitlines():
            add = json.loads(line).get("add")
            if add:
                found[add["partitionValues"]["partition"]] = json.loads(add["stats"])
    return found


def flush() -> pa.Table:
    """A flush as the sink makes one: one-partition chunks, and one chunk of two partitions."""
    nulls = records(2, 0, 9).set_column(
        3, "timestamp", pa.nulls(10, SCHEMA.field("timestamp").type)
    )
    mixed = pa.concat_tables([records(3, 0, 4), records(1, 200, 204)]).combine_chunks()
    return pa.concat_tables([records(0, 0, 99), records(1, 0, 49), nulls, mixed]).cast(SCHEMA)


def test_rows_statistics_and_markers_are_those_delta_rs_writes(tmp_path: Path) -> None:
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    rows = flush()
    marks = {0: Mark(99), 1: Mark(204), 2: Mark(9), 3: Mark(4)}
    table = create(ours)
    assert fitted(table, rows, arrow_schema(table)) is not None
    ParquetAppender("lz4_raw").append(table, rows, arrow_schema(table), marker_commit(TOPIC, marks))
    write_deltalake(
        create(theirs),
        rows,
        mode="append",
        commit_properties=marker_commit(TOPIC, marks),
        writer_properties=writer_properties("lz4_raw"),
    )

    assert added_files(ours) == added_files(theirs)
    assert set(added_files(ours)) == {"0", "1", "2", "3"}
    order = ["partition", "offset"]
    assert pl.read_delta(ours).sort(order).equals(pl.read_delta(theirs).sort(order))
    back = DeltaTable(ours).to_pyarrow_table().sort_by([(c, "ascending") for c in order])
    assert (
        back["value"].to_pylist()
        == rows.sort_by([(c, "ascending") for c in order])["value"].to_pylist()
    )
    assert table.version() == 1 and table.transaction_version(app_id(TOPIC, 1)) == 204
    # The statistics prune: a scan for offsets above 150 reads only partition 1's file.
    above = pl.scan_delta(ours).filter(pl.col("offset") > 150).collect()
    assert sorted(above["offset"].to_list()) == list(range(200, 205))


@pytest.mark.parametrize("compression", [*CODECS, "zstd:3"])
def test_every_compression_setting_writes_files_delta_rs_reads(
    tmp_path: Path, compression: str
) -> None:
    uri = str(tmp_path / "a table" / "t%1")  # delta-rs percent-encodes its file:// URI
    table = create(uri)
    ParquetAppender(compression).append(table, records(0, 0, 9), arrow_schema(table), None)
    # (polars reads no table at such a path, delta-rs's own files neither)
    assert sorted(DeltaTable(uri).to_pyarrow_table()["offset"].to_pylist()) == list(range(10))


def test_timestamp_bounds_are_truncated_to_milliseconds_as_delta_rs_does(tmp_path: Path) -> None:
    micros = pa.timestamp("us", "UTC")
    moments = pa.array([1_700_000_000_000_400, 1_700_000_000_123_600], micros)
    schema = pa.schema([f.with_type(micros) if f.name == "timestamp" else f for f in SCHEMA])
    rows = records(0, 0, 1).cast(schema).set_column(3, "timestamp", moments)
    write_deltalake(create(str(tmp_path)), rows, mode="append")

    stats = added_files(str(tmp_path))["0"]
    assert stats["minValues"]["timestamp"] == "2023-11-14T22:13:20.000Z"
    assert stats["maxValues"]["timestamp"] == "2023-11-14T22:13:20.123Z"
    assert file_stats(rows)["minValues"]["timestamp"] == stats["minValues"]["timestamp"]
    assert file_stats(rows)["maxValues"]["timestamp"] == stats["maxValues"]["timestamp"]


def test_long_strings_get_no_bounds_rather_than_wrong_ones() -> None:
    stats = file_stats(pa.table({"topic": ["a" * 40, "b"]}))
    assert "topic" not in stats["minValues"] and stats["nullCount"]["topic"] == 0


def test_a_conflicting_commit_fails_and_leaves_no_files(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    stale = create(uri)
    winner = DeltaTable(uri)
    ParquetAppender("zstd:1").append(
        winner, records(0, 0, 9), arrow_schema(winner), marker_commit(TOPIC, {0: Mark(9)})
    )
    before = sorted(Path(uri).rglob("*.parquet"))

    with pytest.raises(CommitFailedError):
        ParquetAppender("zstd:1").append(
            stale, records(0, 0, 9), arrow_schema(stale), marker_commit(TOPIC, {0: Mark(9)})
        )

    assert sorted(Path(uri).rglob("*.parquet")) == before
    assert pl.read_delta(uri).height == 10


def test_last_record_of_a_poll_is_the_one_coverage_finds() -> None:
    in_order = records(3, 10, 19)
    shuffled = in_order.take([4, 9, 0, 2])
    no_stamp = in_order.set_column(3, "timestamp", pa.nulls(10, SCHEMA.field("timestamp").type))
    two_partitions = pa.concat_tables([records(3, 0, 4), records(1, 50, 60)])
    for poll in (in_order, shuffled, no_stamp, two_partitions, in_order.slice(0, 0)):
        assert last_record(poll, 3) == coverage(poll).get(3, Mark(-1))
    assert last_record(in_order, 3) == Mark(19, 1_700_000_000_019, 19)


def test_rows_this_path_must_not_take_go_to_delta_rs(tmp_path: Path) -> None:
    table = create(str(tmp_path / "t"))
    schema = arrow_schema(table)
    rows = records(0, 0, 4).cast(SCHEMA)
    shuffled = rows.select(list(reversed(rows.schema.names)))
    fitted_rows = fitted(table, shuffled, schema)
    assert fitted_rows is not None and fitted_rows.schema.names == schema.names

    wider = rows.append_column("extra", pa.array([1] * 5))  # needs the schema merge
    other_type = rows.set_column(0, "topic", pa.array([1] * 5))  # delta-rs refuses it
    null_topic = rows.set_column(0, pa.field("topic", pa.string()), pa.nulls(5, pa.string()))
    for bad in (wider, other_type, null_topic, rows.drop_columns(["headers"])):
        assert fitted(table, bad, schema) is None
