"""The whole job (`python -m bytewax.run flows.kafka_to_delta:flow`) against a real broker."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from connectors.delta.markers import app_id
from tests.jobs import job_env, read_table, run_job
from tests.producing import Record, produce, producer, simple_items

EDGE_CASES: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
    (b"k", b"v", []),
    (None, b"null key", [("trace", b"abc")]),
    (b"tombstone", None, []),
    (None, None, [("a", b"1"), ("a", b"2"), ("empty", b""), ("none", None)]),
    (b"", b"", [("\u00fcnicode", b"\x00\xff")]),
    (b"\x00\x01binary", bytes(range(256)), []),
]


def assert_table_matches(root: Path, topic: str, produced: list[Record]) -> None:
    """Every produced record is one row, with its key, value and headers intact."""
    table = read_table(root / topic).sort("partition", "offset")
    want = sorted((r for r in produced if r.topic == topic), key=lambda r: (r.partition, r.offset))
    assert table.height == len(want)
    assert table["topic"].unique().to_list() == [topic]
    got = [
        (p, o, k, v, [(h["key"], h["value"]) for h in hs])
        for p, o, k, v, hs in table.select(
            "partition", "offset", "key", "value", "headers"
        ).iter_rows()
    ]
    assert got == [(r.partition, r.offset, r.key, r.value, list(r.headers)) for r in want]


def test_topics_and_partitions_land_exactly(kafka_bootstrap, topic_factory, tmp_path):
    orders, users = topic_factory(3), topic_factory(2)
    items = [
        (topic, i % parts, key, value, headers)
        for topic, parts in ((orders, 3), (users, 2))
        for i in range(300)
        for key, value, headers in [EDGE_CASES[i % len(EDGE_CASES)]]
    ]
    produced = produce(kafka_bootstrap, items)
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [orders, users], root)

    first = run_job(env, root / "_recovery")
    assert first.returncode == 0, first.stderr[-3000:]
    for topic in (orders, users):
        assert_table_matches(root, topic, produced)
    assert DeltaTable(str(root / orders)).transaction_version(app_id(orders, 0)) == 99

    # A second run finds nothing new; then new records are appended, exactly once.
    assert run_job(env, root / "_recovery").returncode == 0
    produced += produce(kafka_bootstrap, [(orders, 1, b"late", b"late", [])])
    third = run_job(env, root / "_recovery")
    assert third.returncode == 0, third.stderr[-3000:]
    for topic in (orders, users):
        assert_table_matches(root, topic, produced)


def test_timestamps_are_utc_milliseconds(kafka_bootstrap, topic_factory, tmp_path):
    # Timestamps years old: real Kafka's time retention (7 days by default) would delete them
    # within a retention check, so this topic keeps its records forever.
    topic = topic_factory(1, config={"retention.ms": "-1"})
    prod = producer(kafka_bootstrap)
    stamps = [1_700_000_000_123, 1_600_000_000_001]
    for ts in stamps:
        prod.produce(topic, value=b"x", timestamp=ts)
    assert prod.flush(30) == 0
    root = tmp_path / "lake"
    assert run_job(job_env(kafka_bootstrap, [topic], root), None).returncode == 0
    table = read_table(root / topic).sort("offset")
    assert str(table.schema["timestamp"]) == "Datetime(time_unit='us', time_zone='UTC')"
    assert table["timestamp"].dt.epoch("ms").to_list() == stamps


def test_aborted_transactions_never_land(
    txn_broker, kafka_bootstrap, broker_kind, topic_factory, tmp_path
):
    """read_committed by default: only committed transactions' records land (offsets have gaps)."""
    topic = topic_factory(2, bootstrap=txn_broker)
    prod = producer(txn_broker, **{"transactional.id": f"tx-{topic}"})
    prod.init_transactions(30)
    committed: list[bytes] = []
    for n in range(6):
        prod.begin_transaction()
        batch = [f"txn{n}-{i}".encode() for i in range(50)]
        for i, value in enumerate(batch):
            prod.produce(topic, value=value, partition=i % 2)
        # In the log before the abort: librdkafka purges what is still queued when it aborts,
        # and only records the broker has can test read_committed.
        assert prod.flush(30) == 0
        if n % 2 == 0:
            prod.commit_transaction(30)
            committed += batch
        else:
            prod.abort_transaction(30)
    root = tmp_path / "lake"
    env = job_env(txn_broker, [topic], root)
    result = run_job(env, root / "_recovery")
    assert result.returncode == 0, result.stderr[-3000:]

    table = read_table(root / topic)
    assert Counter(table["value"].to_list()) == Counter(committed)
    assert table.select("partition", "offset").n_unique() == table.height
    if txn_broker == kafka_bootstrap and broker_kind in ("kafka", "container", "external"):
        # Real Kafka: each transaction takes 25 offsets per partition plus one for its
        # commit/abort marker, so the committed ones (0, 2, 4) land at exactly these offsets.
        want = sorted((p, 26 * n + i) for p in (0, 1) for n in (0, 2, 4) for i in range(25))
        assert sorted(table.select("partition", "offset").iter_rows()) == want
    # Re-running from the table's markers (which sit before gaps) adds nothing.
    assert run_job(env, root / "_recovery").returncode == 0
    assert read_table(root / topic).height == len(committed)


def test_a_million_records_land_exactly_once(kafka_bootstrap, topic_factory, tmp_path):
    topic = topic_factory(4)
    produce(kafka_bootstrap, simple_items(topic, 4, 1_000_000, size=20))
    root = tmp_path / "lake"
    result = run_job(job_env(kafka_bootstrap, [topic], root), root / "_recovery", snapshot_s=5)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pl.scan_delta(str(root / topic)).select("partition", "offset")
    counts = table.select(
        pl.len(), pl.struct("partition", "offset").n_unique().alias("u")
    ).collect()
    assert counts.row(0) == (1_000_000, 1_000_000)


@pytest.mark.parametrize("guarantee", ["at-least-once", "at-most-once"])
def test_other_guarantees_land_everything_without_crashes(
    guarantee, kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory(2)
    produced = produce(kafka_bootstrap, simple_items(topic, 2, 5_000))
    root = tmp_path / "lake"
    env = job_env(kafka_bootstrap, [topic], root, guarantee)
    assert run_job(env, root / "_recovery").returncode == 0
    # Restarting resumes from the committed position: nothing twice.
    assert run_job(env, root / "_recovery").returncode == 0
    assert_table_matches(root, topic, produced)
