"""The sink's table writer on real Delta tables: replays, overlaps, foreign rows and races."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from connectors.delta.maintenance import MaintenancePolicy
from connectors.delta.markers import Mark, app_id
from connectors.delta.table_writer import DeltaTableWriter
from connectors.kafka.records import SCHEMA

TOPIC = "events"


def records(partition: int, first: int, last: int, step: int = 1) -> pa.Table:
    """Rows of one partition with offsets first..last (inclusive); value encodes the key."""
    offsets = list(range(first, last + 1, step))
    n = len(offsets)
    return pa.Table.from_pydict(
        {
            "topic": [TOPIC] * n,
            "partition": [partition] * n,
            "offset": offsets,
            "timestamp": [1_700_000_000_000 + o for o in offsets],
            "key": [None if o % 5 == 0 else f"k{o}".encode() for o in offsets],
            "value": [f"{partition}:{o}".encode() for o in offsets],
            "headers": [[{"key": "h", "value": b"1"}] if o % 2 else [] for o in offsets],
        },
        schema=SCHEMA,
    )


def keys_in(uri: str) -> list[tuple[int, int]]:
    df = pl.read_delta(uri).select("partition", "offset").sort("partition", "offset")
    return list(df.iter_rows())


def expected(*ranges: tuple[int, int, int]) -> list[tuple[int, int]]:
    return sorted((p, o) for p, first, last in ranges for o in range(first, last + 1))


def test_replaying_the_same_batch_leaves_one_row_per_key(tmp_path: Path) -> None:
    uri = str(tmp_path / TOPIC)
    writer = DeltaTableWriter(uri, TOPIC)
    batch = pa.concat_tables([records(0, 0, 99), records(1, 0, 49)])
    first = writer.write_exactly_once(batch)
    again = DeltaTableWriter(uri, TOPIC).write_exactly_once(batch)

    assert (first.rows_written, again.rows_written, again.rows_skipped) == (150, 0, 150)
    assert keys_in(uri) == expected((0, 0, 99), (1, 0, 49))
    table = DeltaTable(uri)
    assert table.transaction_version(app_id(TOPIC, 0)) == 99
    assert table.transaction_version(app_id(TOPIC, 1)) == 49
    # Rows keep their content through the round trip.
    order = [("partition", "ascending"), ("offset", "ascending")]
    got = pl.read_delta(uri).select(SCHEMA.names).to_arrow().cast(SCHEMA).sort_by(order)
    assert got.to_pylist() == batch.sort_by(order).to_pylist()


def test_overlapping_batch_adds_only_new_offsets(tmp_path: Path) -> None:
    uri = str(tmp_path / TOPIC)
    writer = DeltaTableWriter(uri, TOPIC)
    writer.write_exactly_once(records(0, 0, 99))
    result = writer.write_exactly_once(pa.concat_tables([records(0, 50, 149), records(2, 0, 9)]))

    assert (result.rows_written, result.rows_skipped) == (60, 50)
    assert keys_in(uri) == expected((0, 0, 149), (2, 0, 9))
    assert DeltaTable(uri).transaction_version(app_id(TOPIC, 0)) == 149


def test_offsets_with_gaps_are_kept_exactly(tmp_path: Path) -> None:
    """Transaction markers and compaction leave gaps; nothing may assume contiguous offsets."""
    uri = str(tmp_path / TOPIC)
    writer = DeltaTableWriter(uri, TOPIC)
    writer.write_exactly_once(records(0, 0, 40, step=4))
    writer.write_exactly_once(records(0, 20, 80, step=4))
    want = sorted({(0, o) for o in range(0, 81, 4)})
    assert keys_in(uri) == want


def test_table_without_markers_is_merged_not_duplicated(tmp_path: Path) -> None:
    """Rows written by something else (no txn marker) are matched by key with a MERGE."""
    uri = str(tmp_path / TOPIC)
    write_deltalake(uri, records(0, 0, 59), partition_by=["partition"])
    writer = DeltaTableWriter(uri, TOPIC)
    result = writer.write_exactly_once(pa.concat_tables([records(0, 40, 99), records(1, 0, 9)]))

    assert result.rows_written == 40 + 10
    assert keys_in(uri) == expected((0, 0, 99), (1, 0, 9))
    # The merge left a marker, so the next replay is a plain filtered append.
    assert DeltaTable(uri).transaction_version(app_id(TOPIC, 0)) == 99
    again = writer.write_exactly_once(records(0, 90, 109))
    assert (again.rows_written, again.rows_skipped) == (10, 10)
    assert keys_in(uri) == expected((0, 0, 109), (1, 0, 9))


def test_merge_that_inserts_nothing_still_records_the_marker(tmp_path: Path) -> None:
    uri = str(tmp_path / TOPIC)
    write_deltalake(uri, records(0, 0, 59), partition_by=["partition"])
    result = DeltaTableWriter(uri, TOPIC).write_exactly_once(records(0, 10, 19))
    assert result.rows_written == 0
    assert keys_in(uri) == expected((0, 0, 59))
    assert DeltaTable(uri).transaction_version(app_id(TOPIC, 0)) == 19


def test_unpartitioned_foreign_table_is_merged(tmp_path: Path) -> None:
    uri = str(tmp_path / TOPIC)
    write_deltalake(uri, records(3, 0, 29))
    DeltaTableWriter(uri, TOPIC).write_exactly_once(records(3, 20, 39))
    assert keys_in(uri) == expected((3, 0, 39))


def test_append_mode_does_not_dedupe(tmp_path: Path) -> None:
    """at-least-once / at-most-once write plainly: a replay is visible as duplicates."""
    uri = str(tmp_path / TOPIC)
    writer = DeltaTableWriter(uri, TOPIC)
    writer.append(records(0, 0, 9))
    writer.append(records(0, 5, 14))
    assert len(keys_in(uri)) == 20
    assert DeltaTable(uri).transaction_version(app_id(TOPIC, 0)) is None


def _race(uri: str, step: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    """Write offsets 0..599 of two partitions in batches of `step`, as a zombie instance would:
    the same records in the same order as its twin, with other batch boundaries."""
    writer = DeltaTableWriter(uri, TOPIC, max_attempts=500)
    barrier.wait()
    for first in range(0, 600, step):
        last = min(first + step, 600) - 1
        writer.write_exactly_once(
            pa.concat_tables([records(0, first, last), records(1, first, last)])
        )


def test_two_writers_racing_on_one_table_never_duplicate(tmp_path: Path) -> None:
    uri = str(tmp_path / TOPIC)
    ctx = multiprocessing.get_context("spawn")  # fork after deltalake is loaded panics
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_race, args=(uri, step, barrier)) for step in (50, 70)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=180)
    assert [proc.exitcode for proc in procs] == [0, 0]

    got = keys_in(uri)
    assert len(got) == len(set(got)), "duplicate (partition, offset) rows"
    assert got == expected((0, 0, 599), (1, 0, 599))


def test_maintenance_keeps_files_few_and_markers_intact(tmp_path: Path) -> None:
    uri = str(tmp_path / TOPIC)
    policy = MaintenancePolicy(
        compact_every_commits=5,
        vacuum_every_commits=10,
        vacuum_retention_hours=0,
        checkpoint_interval=10,
    )
    writer = DeltaTableWriter(uri, TOPIC, maintenance=policy)
    for first in range(0, 300, 10):
        writer.write_exactly_once(
            pa.concat_tables([records(0, first, first + 9), records(1, first, first + 9)])
        )
    # A replay after all that maintenance still finds its markers.
    replay = writer.write_exactly_once(records(0, 250, 299))
    assert (replay.rows_written, replay.rows_skipped) == (0, 50)

    table = DeltaTable(uri)
    assert keys_in(uri) == expected((0, 0, 299), (1, 0, 299))
    assert table.transaction_version(app_id(TOPIC, 0)) == 299
    assert len(table.file_uris()) <= 2 * 5  # compacted every 5 commits, per partition
    on_disk = list((tmp_path / TOPIC).rglob("*.parquet"))
    assert len(on_disk) < 30 * 2  # vacuum deleted the compacted-away files
    log_dir = tmp_path / TOPIC / "_delta_log"
    assert list(log_dir.glob("*.checkpoint.parquet"))
    assert pl.read_delta(uri).height == 600


def test_maintenance_runs_across_restarts(tmp_path: Path) -> None:
    """A job restarted before it made N commits of its own (bounded runs, exit 75, pod
    restarts) must still compact and vacuum: the intervals count the table's commits."""
    uri = str(tmp_path / TOPIC)
    policy = MaintenancePolicy(
        compact_every_commits=3, vacuum_every_commits=6, vacuum_retention_hours=0
    )
    for first in range(0, 120, 10):  # twelve runs, one commit each
        DeltaTableWriter(uri, TOPIC, maintenance=policy).write_exactly_once(
            records(0, first, first + 9)
        )

    history = [entry["operation"] for entry in DeltaTable(uri).history()]
    assert history.count("OPTIMIZE") >= 3, history
    assert "VACUUM END" in history, history
    assert len(DeltaTable(uri).file_uris()) <= 4
    assert keys_in(uri) == expected((0, 0, 119))


def test_new_columns_keep_the_coordinates_first_and_the_rows_order(tmp_path):
    """delta-rs's schema merge moved `partition` behind the other columns, on a table made
    before its first rows (markers only) and at every new field of a decoded table."""
    uri = str(tmp_path / "t")
    writer = DeltaTableWriter(uri, TOPIC, schema=None)
    writer.write_exactly_once(pa.table({}), {0: Mark(1)})  # every record a dead letter
    first = records(0, 2, 4).drop_columns(["value"]).append_column("n", pa.array([1, 2, 3]))
    writer.write_exactly_once(first)
    later = records(0, 5, 6).drop_columns(["value"])
    later = later.append_column("n", pa.array([4, 5])).append_column("z", pa.array(["a", "b"]))
    writer.write_exactly_once(later)

    names = pa.schema(DeltaTable(uri).schema().to_arrow()).names
    assert names == ["topic", "partition", "offset", "timestamp", "key", "headers", "n", "z"]
    assert keys_in(uri) == [(0, o) for o in range(2, 7)]
