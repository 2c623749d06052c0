"""What only a real Apache Kafka broker shows: exact watermarks, Kafka's own consumer-groups
tool, log compaction leaving offset gaps, and a broker restart in the middle of a run.

Skipped unless the session broker is Apache Kafka (``WAXLAKE_TEST_BROKER=kafka``, as in CI),
except the restart test, which starts a broker of its own whenever java and mvn are there.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable

from connectors.delta.markers import app_id
from connectors.local_broker import KafkaBroker, create_topic, kafka_consumer_groups, start_kafka
from tests.brokers import kafka_possible
from tests.jobs import (
    diff,
    job_env,
    landed_keys,
    read_table,
    run_job,
    start_job,
    wait_until_version_grows,
)
from tests.producing import BackgroundProducer, Record, produce, producer, simple_items


def watermarks(
    bootstrap: str, topic: str, partition: int, isolation: str = "read_committed"
) -> tuple[int, int]:
    """(low, high) as a consumer of ``isolation`` sees them: under read_committed the high one is
    the last stable offset (LSO), which stops before any open transaction."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "watermarks", "isolation.level": isolation}
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()


def read_offsets(bootstrap: str, topic: str, partition: int) -> list[int]:
    """Offsets of every record now in the partition (read_committed, from the log start)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0)])  # below the log start: resets to it
    offsets: list[int] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return offsets
                raise AssertionError(error)
            offset = msg.offset()
            assert offset is not None
            offsets.append(offset)
    finally:
        consumer.close()
    raise AssertionError("partition end not reached within 30 s")


def test_watermarks_are_exact(kafka_broker, topic_factory):
    """Batched produce: the high watermark is the next offset (Tansu reports the last batch's
    base offset + 1); a committed transaction adds its commit marker; DeleteRecords moves the
    low watermark."""
    # Before the transaction: an open one would hold read_committed's LSO back.
    bootstrap = kafka_broker.bootstrap
    topic = topic_factory(3)
    produce(bootstrap, simple_items(topic, 3, 3_000))
    assert [watermarks(bootstrap, topic, p) for p in range(3)] == [(0, 1_000)] * 3

    prod = producer(bootstrap, **{"transactional.id": f"tx-{topic}"})
    prod.init_transactions(30)
    prod.begin_transaction()
    for i in range(10):
        prod.produce(topic, value=f"t{i}".encode(), partition=0)
    prod.commit_transaction(30)
    # 10 records + 1 commit marker. The coordinator writes the marker after the commit returns,
    # and only then does the LSO pass the transaction: poll for it (a few ms here).
    deadline = time.monotonic() + 10
    while (seen := watermarks(bootstrap, topic, 0)) != (0, 1_011) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen == (0, 1_011)
    assert watermarks(bootstrap, topic, 0, "read_uncommitted") == (0, 1_011)

    admin = AdminClient({"bootstrap.servers": bootstrap})
    (future,) = admin.delete_records([TopicPartition(topic, 1, 400)]).values()
    future.result(timeout=30)
    assert watermarks(bootstrap, topic, 1) == (400, 1_000)


def test_consumer_groups_tool_sees_lag_zero_after_a_bounded_run(
    kafka_broker, topic_factory, tmp_path
):
    bootstrap = kafka_broker.bootstrap
    topic = topic_factory(3)
    produce(bootstrap, simple_items(topic, 3, 3_000))
    root = tmp_path / "lake"
    env = job_env(bootstrap, [topic], root)
    result = run_job(env, root / "_recovery")
    assert result.returncode == 0, result.stderr[-3000:]

    rows = kafka_consumer_groups(bootstrap, env["WAXLAKE_GROUP_ID"], kafka_broker.jars)
    assert sorted(
        (r.topic, r.partition, r.current_offset, r.log_end_offset, r.lag) for r in rows
    ) == [(topic, p, 1_000, 1_000, 0) for p in range(3)]


def test_consumer_groups_tool_sees_lag_zero_after_transactions(
    kafka_broker, topic_factory, tmp_path
):
    bootstrap = kafka_broker.bootstrap
    topic = topic_factory(1)
    prod = producer(bootstrap, **{"transactional.id": f"tx-{topic}"})
    prod.init_transactions(30)
    for n in range(2):
        prod.begin_transaction()
        for i in range(5):
            prod.produce(topic, value=f"{n}-{i}".encode(), partition=0)
        prod.commit_transaction(30)
    root = tmp_path / "lake"
    env = job_env(bootstrap, [topic], root)
    result = run_job(env, root / "_recovery")
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_table(root / topic).height == 10
    (row,) = kafka_consumer_groups(bootstrap, env["WAXLAKE_GROUP_ID"], kafka_broker.jars)
    assert row.log_end_offset == 12  # 2 x (5 records + 1 commit marker)
    # The group offset is past the trailing commit marker: the source covers offsets to
    # the partition's end, records or not.
    assert (row.current_offset, row.lag) == (12, 0)


def produce_rounds(bootstrap: str, topic: str, first_seq: int, rounds: int) -> list[Record]:
    """Records whose keys repeat (d0..d9) among unique ones (u...), one flush per round, with
    a pause so each round rolls a new segment (segment.ms is tiny); then a sentinel record that
    rolls the last round's segment, so every round can be compacted."""
    produced: list[Record] = []
    seq = first_seq
    for _ in range(rounds):
        items = []
        for _ in range(30):
            key = f"u{seq}" if seq % 3 == 0 else f"d{seq % 10}"
            items.append((topic, 0, key.encode(), f"v{seq}".encode(), ()))
            seq += 1
        produced += produce(bootstrap, items)
        time.sleep(0.3)  # > segment.ms: the next append rolls the segment (not a wait for it)
    produced += produce(bootstrap, [(topic, 0, f"sentinel{seq}".encode(), b"s", ())])
    return produced


def compacted(records: list[Record]) -> set[int]:
    """Offsets compaction keeps: the last record of each key."""
    last: dict[bytes | None, int] = {}
    for record in records:
        last[record.key] = max(record.offset, last.get(record.key, -1))
    return set(last.values())


def wait_until_compacted(bootstrap: str, topic: str, want: set[int], timeout: float = 90) -> None:
    """Poll the partition's content until it is exactly ``want`` (the cleaner ran)."""
    deadline = time.monotonic() + timeout
    seen: list[int] = []
    while time.monotonic() < deadline:
        seen = read_offsets(bootstrap, topic, 0)
        if set(seen) == want:
            return
        time.sleep(0.2)
    pytest.fail(f"not compacted within {timeout} s: {len(seen)} records, want {len(want)}")


COMPACT = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "max.compaction.lag.ms": "100",
}


def test_compacted_topic_with_offset_gaps_lands_exactly_once(kafka_broker, topic_factory, tmp_path):
    bootstrap = kafka_broker.bootstrap
    topic = topic_factory(1, config=COMPACT)
    first = produce_rounds(bootstrap, topic, 0, rounds=4)
    survivors = compacted(first)
    wait_until_compacted(bootstrap, topic, survivors)
    assert len(survivors) < len(first) and max(survivors) - min(survivors) + 1 > len(survivors)

    root = tmp_path / "lake"
    env = job_env(bootstrap, [topic], root)
    result = run_job(env, root / "_recovery")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(landed_keys(root, topic).elements()) == [(0, o) for o in sorted(survivors)]
    marker = DeltaTable(str(root / topic)).transaction_version(app_id(topic, 0))
    assert marker == max(survivors)

    # More rounds with the same keys: compaction now also removes offsets right after the
    # marker, so the next run starts inside a gap; what is left past the marker lands once.
    second = produce_rounds(bootstrap, topic, 1_000, rounds=3)
    now = compacted(first + second)
    wait_until_compacted(bootstrap, topic, now)
    assert marker + 1 not in now
    result = run_job(env, root / "_recovery")
    assert result.returncode == 0, result.stderr[-3000:]
    want = survivors | {o for o in now if o > marker}
    got = landed_keys(root, topic)
    assert sorted(got.elements()) == [(0, o) for o in sorted(want)]


@pytest.fixture
def own_kafka() -> Iterator[KafkaBroker]:
    """A broker of the test's own (it restarts it), whatever the session broker is."""
    if why := kafka_possible():
        pytest.skip(why)
    broker = start_kafka()
    yield broker
    broker.stop()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_broker_restart_mid_run_loses_and_duplicates_nothing(how, own_kafka, tmp_path):
    bootstrap = own_kafka.bootstrap
    topics = {f"restart-{uuid.uuid4().hex[:8]}": 2}
    for name, partitions in topics.items():
        create_topic(bootstrap, name, partitions)
    names = list(topics)
    root = tmp_path / "lake"
    recovery = root / "_recovery"
    log = tmp_path / "job.log"
    env = job_env(bootstrap, names, root, max_batch_rows=700)

    def versions() -> dict[str, int]:
        return {
            t: DeltaTable(str(root / t)).version()
            for t in names
            if DeltaTable.is_deltatable(str(root / t))
        }

    background = BackgroundProducer(bootstrap, topics, rate=2_000).start()
    proc = start_job(env, recovery, log)
    try:
        wait_until_version_grows(versions, {}, proc, log)
        before = versions()
        own_kafka.restart(kill=how == "sigkill")
        # The job outlives the restart and commits again through the restarted broker.
        wait_until_version_grows(versions, before, proc, log, timeout=120)
        time.sleep(1.0)
    finally:
        produced = background.stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    final = run_job(env, recovery)
    assert final.returncode == 0, final.stderr[-3000:]
    assert len(produced) > 1_000
    for topic in names:
        found = diff(produced, topic, landed_keys(root, topic))
        assert not found.unknown, sorted(found.unknown)[:5]
        assert not found.lost, f"{sum(found.lost.values())} records lost"
        assert not found.duplicated, f"{sum(found.duplicated.values())} duplicates"
    assert "Kafka error" in log.read_text(), "the restart went unnoticed: was it a restart?"


def test_restart_keeps_the_log(own_kafka, tmp_path):
    topic = f"keep-{uuid.uuid4().hex[:8]}"
    create_topic(own_kafka.bootstrap, topic, 1)
    produce(own_kafka.bootstrap, simple_items(topic, 1, 100))
    port = own_kafka.port
    own_kafka.restart()
    assert own_kafka.port == port
    assert read_offsets(own_kafka.bootstrap, topic, 0) == list(range(100))
    assert own_kafka.log_dir.is_dir() and Path(own_kafka.broker_log).stat().st_size > 0
