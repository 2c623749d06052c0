"""Partitions that have no position yet: where they start must never skip records silently.

A partition's origin (where reading began, `connectors.delta.gaps`) belongs to one topic ID: a
recreated topic's offsets start again, so an old origin would skip its first records. A partition
added to a topic after the job began starts at offset 0, whatever `auto.offset.reset` says (that
only applies to the topic's first start), so records deleted from it before it was first read
are a loss like any other.
"""

from __future__ import annotations

import json
import shutil

import pytest
from confluent_kafka.admin import AdminClient

from connectors.kafka.topic_ids import broker_topic_ids
from tests.broker_ops import add_partitions, delete_records, recreate_topic
from tests.jobs import job_env, read_table, run_job
from tests.producing import produce
from tests.test_data_loss import gaps, last_line


def records(topic: str, partition: int, count: int, tag: str = "v"):
    return [(topic, partition, b"k", f"{tag}-{partition}-{i}".encode(), ()) for i in range(count)]


def landed(root, topic: str) -> list[tuple[int, int]]:
    return sorted(read_table(root / topic).select("partition", "offset").iter_rows())


def test_origins_of_a_recreated_topic_are_refused(log_broker, topic_factory, tmp_path):
    """All of the old topic had expired when the job first read it (origin 1000, nothing
    landed); the topic is recreated and grows past 1000. Reading the new topic from the old
    origin would skip its offsets 0..999."""
    topic = topic_factory(1, bootstrap=log_broker)
    if broker_topic_ids(AdminClient({"bootstrap.servers": log_broker}), [topic])[topic] is None:
        pytest.skip("the broker reports no topic IDs: README documents what is left without")
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root)
    produce(log_broker, records(topic, 0, 1000, "old"))
    delete_records(log_broker, topic, {0: 1000})
    assert run_job(env, root / "_recovery").returncode == 0
    recreate_topic(log_broker, topic, 1)
    produce(log_broker, records(topic, 0, 2000, "new"))

    refused = run_job(env, root / "_recovery")

    assert refused.returncode == 2, refused.stderr[-3000:]
    line = last_line(refused.stderr)
    assert line.startswith("waxlake: error: ") and "recreated" in line, line
    assert f"{root}/_data_loss/{topic}" in line, line
    assert not (root / topic / "_delta_log").exists() or landed(root, topic) == []

    # The way out the message names: move the old topic's record away.
    shutil.move(root / "_data_loss" / topic, tmp_path / "old-data-loss")
    shutil.rmtree(root / "_recovery")
    again = run_job(env, root / "_recovery")
    assert again.returncode == 0, again.stderr[-3000:]
    assert landed(root, topic) == [(0, o) for o in range(2000)]


@pytest.mark.parametrize("reset", ["earliest", "latest"])
def test_partitions_added_between_runs_are_read_from_their_start(
    reset, log_broker, topic_factory, tmp_path
):
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root, kafka_config=json.dumps({"auto.offset.reset": reset}))
    assert run_job(env, root / "_recovery").returncode == 0  # the topic's first start
    produce(log_broker, records(topic, 0, 100))
    add_partitions(log_broker, topic, 3)
    produce(log_broker, records(topic, 1, 50) + records(topic, 2, 50))

    result = run_job(env, root / "_recovery")

    assert result.returncode == 0, result.stderr[-3000:]
    expected = [(p, o) for p, n in ((0, 100), (1, 50), (2, 50)) for o in range(n)]
    assert landed(root, topic) == expected


@pytest.mark.parametrize("setting", ["fail", "continue"])
def test_records_deleted_from_a_new_partition_before_it_was_read(
    setting, log_broker, topic_factory, tmp_path
):
    topic = topic_factory(1, bootstrap=log_broker)
    root = tmp_path / "lake"
    env = job_env(log_broker, [topic], root, on_data_loss=setting)
    produce(log_broker, records(topic, 0, 100))
    assert run_job(env, root / "_recovery").returncode == 0
    add_partitions(log_broker, topic, 2)
    produce(log_broker, records(topic, 1, 100))
    delete_records(log_broker, topic, {1: 40})

    result = run_job(env, root / "_recovery")

    if setting == "fail":
        assert result.returncode == 1, result.stderr[-3000:]
        line = last_line(result.stderr)
        assert f"topic {topic} partition 1: offsets 0-39 (40 records)" in line, line
        assert landed(root, topic) == [(0, o) for o in range(100)]
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        assert landed(root, topic) == [(0, o) for o in range(100)] + [
            (1, o) for o in range(40, 100)
        ]
        assert gaps(root, topic) == [(1, 0, 39)]
