"""`flows.upsert_to_delta`: current-state tables from keyed topics and Debezium change events."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from connectors.delta.state_writer import StateTableWriter
from tests.jobs import job_env, run_job
from tests.producing import Record, produce, producer

FLOW = "flows.upsert_to_delta:flow"
COMMITTED = re.compile(r"(\d+) changes merged, (\d+) superseded in the flush, (\d+) replayed")


def state(root: Path, topic: str, key: str = "key") -> dict[Any, dict[str, Any]]:
    rows = DeltaTable(str(root / topic)).to_pyarrow_table().to_pylist()
    keyed = {r[key]: r for r in rows}
    assert len(keyed) == len(rows), "one row per key"
    return keyed


def replay(records: list[Record]) -> dict[bytes, Record]:
    """The state the topic means, by the documented rule: per partition Kafka order; between
    partitions the later timestamp (here: produce order, one partition per key)."""
    live: dict[bytes, Record] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert record.key is not None
        if record.value is None:
            live.pop(record.key, None)
        else:
            live[record.key] = record
    return live


def test_keyed_changes_and_tombstones(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(3)
    # Seven keys, each in one partition; change 150 is a tombstone.
    items: list[tuple[str, int, bytes, bytes | None, tuple[()]]] = [
        (topic, i % 7 % 3, f"k{i % 7}".encode(), json.dumps({"n": i}).encode(), ())
        for i in range(200)
    ]
    items[150] = (topic, items[150][1], items[150][2], None, ())
    produced = produce(kafka_bootstrap, items)
    root = tmp_path / "lake"

    result = run_job(job_env(kafka_bootstrap, [topic], root), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    expected = replay(produced)
    got = state(root, topic)
    assert set(got) == set(expected)
    for key, record in expected.items():
        row = got[key]
        assert (row["n"], row["partition"], row["offset"]) == (
            json.loads(record.value or b"null")["n"],
            record.partition,
            record.offset,
        )
    # The commit lines say what became of the changes: none is a replay on a first run.
    counts = [tuple(map(int, m)) for m in COMMITTED.findall(result.stderr)]
    assert counts and sum(m + s for m, s, _ in counts) == 200
    assert sum(r for _, _, r in counts) == 0
    # A second run changes nothing and commits nothing.
    version = DeltaTable(str(root / topic)).version()
    assert run_job(job_env(kafka_bootstrap, [topic], root), None, flow=FLOW).returncode == 0
    assert DeltaTable(str(root / topic)).version() == version


def test_key_fields_by_name_and_schema_evolution(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    first = [{"tenant": "a", "id": i, "v": i} for i in range(3)]
    later = [
        {"tenant": "a", "id": 1, "v": 10, "note": "new column"},
        {"tenant": "b", "id": 1, "v": 5},
    ]
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, key_fields="tenant,id")
    produce(kafka_bootstrap, [(topic, 0, None, json.dumps(r).encode(), ()) for r in first])
    assert run_job(env, None, flow=FLOW).returncode == 0
    produce(kafka_bootstrap, [(topic, 0, None, json.dumps(r).encode(), ()) for r in later])

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    rows = DeltaTable(str(root / topic)).to_pyarrow_table().to_pylist()
    got = {(r["tenant"], r["id"]): (r["v"], r["note"]) for r in rows}
    assert got == {
        ("a", 0): (0, None),
        ("a", 1): (10, "new column"),
        ("a", 2): (2, None),
        ("b", 1): (5, None),
    }
    assert "key" not in rows[0]


def debezium_event(
    op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, lsn: int, wrap: bool
) -> bytes:
    payload = {
        "before": before,
        "after": after,
        "op": op,
        "ts_ms": 1_700_000_000_000 + lsn,
        "source": {"connector": "postgresql", "ts_ms": 1_700_000_000_000 + lsn, "lsn": lsn},
    }
    if wrap:
        schema = {"type": "struct", "fields": [{"field": "before", "type": "struct", "default": 1}]}
        return json.dumps({"schema": schema, "payload": payload}).encode()
    return json.dumps(payload).encode()


@pytest.mark.parametrize("wrap", [True, False], ids=["with-schema", "payload-only"])
def test_debezium_envelopes(wrap, kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)

    def event(
        op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, lsn: int
    ) -> tuple[str, int, bytes, bytes, tuple[()]]:
        image = after or before or {}
        key = json.dumps({"id": image["id"]}).encode()
        return (topic, 0, key, debezium_event(op, before, after, lsn, wrap), ())

    items = [
        event("r", None, {"id": 1, "name": "snap"}, 1),
        event("r", None, {"id": 2, "name": "two"}, 2),
        event("c", None, {"id": 3, "name": "three"}, 3),
        event("u", {"id": 1, "name": "snap"}, {"id": 1, "name": "updated"}, 4),
        event("d", {"id": 2, "name": "two"}, None, 5),
        (topic, 0, json.dumps({"id": 2}).encode(), None, ()),  # Debezium's tombstone
        event("c", None, {"id": 4, "name": "four"}, 6),
        event("d", {"id": 4, "name": "four"}, None, 7),
    ]
    produce(kafka_bootstrap, items)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, cdc_format="debezium", key_fields="id")

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    got = state(root, topic, key="id")
    assert {k: r["name"] for k, r in got.items()} == {1: "updated", 3: "three"}
    assert got[1]["cdc_lsn"] == "4" and got[1]["offset"] == 3
    assert str(got[1]["cdc_source_ts"]) == "2023-11-14 22:13:20.004000+00:00"
    assert not (root / "_dead_letters" / topic / "_delta_log").exists()


def test_sql_server_change_lsn_is_the_cdc_lsn(kafka_bootstrap, topic_factory, tmp_path):
    """Debezium's SQL Server source block has `change_lsn` and `commit_lsn`, no `lsn`."""
    topic = topic_factory(1)

    def event(op: str, row: dict[str, Any], i: int) -> tuple[str, int, bytes, bytes, tuple[()]]:
        source = {
            "connector": "sqlserver",
            "ts_ms": 1_700_000_000_000 + i,
            "change_lsn": f"00000027:00000758:000{i}",
            "commit_lsn": "00000027:00000758:0009",
        }
        after = None if op == "d" else row
        payload = {"before": row if op != "c" else None, "after": after, "op": op, "source": source}
        key = json.dumps({"id": row["id"]}).encode()
        return (topic, 0, key, json.dumps(payload).encode(), ())

    produce(kafka_bootstrap, [event("c", {"id": 1, "n": 1}, 1), event("u", {"id": 1, "n": 2}, 2)])
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, cdc_format="debezium", key_fields="id")

    result = run_job(env, None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    row = state(root, topic, key="id")[1]
    assert (row["n"], row["cdc_lsn"]) == (2, "00000027:00000758:0002")


def test_a_key_that_moves_partition_follows_timestamps(kafka_bootstrap, topic_factory, tmp_path):
    """After a repartition a key's changes come from another partition: the later timestamp
    wins, whatever order the partitions are committed in."""
    topic = topic_factory(2)
    prod = producer(kafka_bootstrap)
    now = int(time.time() * 1000)  # recent: Kafka's retention deletes old timestamps
    changes = [
        (0, now, "old p0"),
        (1, now + 1000, "moved to p1"),
        (0, now + 500, "late write to p0"),
    ]
    for partition, stamp, name in changes:
        value = json.dumps({"name": name}).encode()
        prod.produce(topic, key=b"k", value=value, partition=partition, timestamp=stamp)
    assert prod.flush(30) == 0
    root = tmp_path / "lake"

    result = run_job(job_env(kafka_bootstrap, [topic], root), None, flow=FLOW)

    assert result.returncode == 0, result.stderr[-3000:]
    assert state(root, topic)[b"k"]["name"] == "moved to p1"


def test_other_guarantees_are_refused(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(1)
    env = job_env(kafka_bootstrap, [topic], tmp_path / "lake", "at-least-once")
    result = run_job(env, None, flow=FLOW)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("waxlake: error: WAXLAKE_GUARANTEE=at-least-once: a current-state table")
    )


def test_two_writers_racing_on_one_state_table(tmp_path):
    """Zombie fencing: the same changes committed by two writers at once land once."""
    import pyarrow as pa

    from connectors.decoding.state_changes import BUCKET, DELETED, key_buckets
    from connectors.delta.markers import Mark

    uri = str(tmp_path / "state")
    n = 500
    keys = pa.array([f"k{i % 50}".encode() for i in range(n)], pa.binary())
    changes = pa.table(
        {
            "topic": ["t"] * n,
            "partition": pa.array([0] * n, pa.int32()),
            "offset": pa.array(range(n), pa.int64()),
            "timestamp": pa.array(range(n), pa.timestamp("ms", tz="UTC")),
            "key": keys,
            DELETED: [False] * n,
            "n": pa.array(range(n), pa.int64()),
        }
    )
    changes = changes.append_column(BUCKET, key_buckets(changes.select(["key"]), 16))
    errors: list[BaseException] = []

    def write(writer: StateTableWriter, rows: pa.Table) -> None:
        try:
            for start in range(0, n, 100):
                part = rows.slice(start, 100)
                writer.write_exactly_once(part, {0: Mark(start + 99, start + 99)})
        except BaseException as exc:
            errors.append(exc)

    writers = [StateTableWriter(uri, "t", ["key"]) for _ in range(2)]
    threads = [threading.Thread(target=write, args=(w, changes)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    rows = DeltaTable(uri).to_pyarrow_table().to_pylist()
    assert len(rows) == 50
    assert {r["key"]: r["n"] for r in rows} == {f"k{i}".encode(): 450 + i for i in range(50)}
